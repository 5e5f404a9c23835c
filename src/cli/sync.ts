import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerSync(program: Command): void {
  void program;
}
