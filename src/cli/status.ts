import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerStatus(program: Command): void {
  void program;
}
