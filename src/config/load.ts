import type { Config } from './types.js';
import { AppError } from '../errors.js';

// Placeholder: being implemented (smol-toml + zod).
export async function loadConfig(file: string): Promise<Config> {
  throw new AppError('CONFIG_NOT_FOUND', `config loading not implemented yet (${file})`);
}
