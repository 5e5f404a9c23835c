import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerSinks(program: Command): void {
  void program;
}
