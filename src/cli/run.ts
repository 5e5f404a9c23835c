import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerRun(program: Command): void {
  void program;
}
