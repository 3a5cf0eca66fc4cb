import type { Command } from 'commander';

export function registerDataCommand(program: Command): void {
  void program;
}
