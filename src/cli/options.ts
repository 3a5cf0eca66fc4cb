// Flag-value parsers for commander. A bad value is an InvalidArgumentError,
// which commander reports with the flag's name: "option '--epochs <n>'
// argument 'x' is invalid. expected a positive integer".
import { InvalidArgumentError } from 'commander';

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!(value.trim() !== '' && Number.isInteger(n) && n >= 1)) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!(value.trim() !== '' && Number.isInteger(n) && n >= 0)) throw new InvalidArgumentError('expected an integer >= 0');
  return n;
}

export function positiveNumber(value: string): number {
  const n = Number(value);
  if (!(value.trim() !== '' && Number.isFinite(n) && n > 0)) throw new InvalidArgumentError('expected a positive number');
  return n;
}

export function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (!(value.trim() !== '' && Number.isFinite(n) && n >= 0)) throw new InvalidArgumentError('expected a number >= 0');
  return n;
}

