import type { Command } from 'commander';

export function registerDemoCommand(program: Command): void {
  void program;
}
