import type { Command } from 'commander';

// Placeholder: this command is being implemented.
export function registerSubjects(program: Command): void {
  void program;
}
