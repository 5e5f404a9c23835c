import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerSimulator(program: Command): void {
  void program;
}
