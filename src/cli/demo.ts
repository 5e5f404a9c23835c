import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerDemo(program: Command): void {
  void program;
}
