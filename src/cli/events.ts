import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerEvents(program: Command): void {
  void program;
}
