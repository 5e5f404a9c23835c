import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerConfig(program: Command): void {
  void program;
}
