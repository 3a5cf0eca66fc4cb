// A command stopped by a signal after saving its state: not a failure of its
// input, so the CLI exits with the shell's code for the signal (128 + its
// number), and scripts can tell an interruption from an error.

const SIGNAL_NUMBERS: Readonly<Record<string, number>> = { SIGINT: 2, SIGTERM: 15 };

export class InterruptedError extends Error {
  /** `signal`: what stopped the work (SIGINT, SIGTERM, or another reason such as an abort). */
  constructor(
    message: string,
    readonly signal: string,
  ) {
    super(message);
    this.name = 'InterruptedError';
  }
}

/** 128 + the signal's number for SIGINT and SIGTERM; 1 for any other reason to stop. */
export function stoppedExitCode(reason: string): number {
  const n = SIGNAL_NUMBERS[reason];
  return n === undefined ? 1 : 128 + n;
}

/** The process exit code for an error: an interruption's by its signal, else 1. */
export function exitCodeFor(err: unknown): number {
  return err instanceof InterruptedError ? stoppedExitCode(err.signal) : 1;
}
