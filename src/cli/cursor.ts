import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerCursor(program: Command): void {
  void program;
}
