import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerPseudonym(program: Command): void {
  void program;
}
