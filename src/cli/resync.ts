import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerResync(program: Command): void {
  void program;
}
