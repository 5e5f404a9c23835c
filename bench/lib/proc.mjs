import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const CLI = path.join(ROOT, 'dist/cli/main.js');

/** Progress goes to stderr: stdout is reserved for the table or the one JSON object. */
export function progress(message) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

/**
 * Runs a node script to completion, collecting stdout (and stderr, forwarded when `echo`).
 * Rejects on a non-zero exit, with the tail of stderr: a benchmark over a failed run is worthless.
 */
export function runNode(args, { cwd = ROOT, env = {}, echoStderr = false, allowExit = [0] } = {}) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d;
      if (echoStderr) process.stderr.write(d);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (allowExit.includes(code)) resolve({ code, stdout, stderr, seconds, pid: child.pid });
      else reject(new Error(`node ${args.map((a) => path.basename(String(a))).join(' ')} exited with ${code ?? signal}: ${stderr.slice(-2000)}`));
    });
  });
}

export function runCli(args, options = {}) {
  return runNode([CLI, ...args], options);
}

/** Starts a long-running CLI command; resolves with the child once its first stdout line arrived. */
export function startCliWithBanner(args, { cwd = ROOT, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let buffered = '';
    const onData = (d) => {
      buffered += d;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      child.stdout.off('data', onData);
      child.stdout.resume();
      try {
        resolve({ child, banner: JSON.parse(buffered.slice(0, nl)) });
      } catch (err) {
        reject(err);
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`${args[0]} exited early with ${code}`)));
  });
}

/** Starts a long-running CLI command without waiting for output (its stderr is collected). */
export function startCli(args, { cwd = ROOT, env = {} } = {}) {
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  child.collected = '';
  child.stderr.setEncoding('utf8').on('data', (d) => (child.collected = (child.collected + d).slice(-20_000)));
  return child;
}

export function stopChild(child, signal = 'SIGTERM', timeoutMs = 15_000) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill(signal);
  });
}

/** A field of /proc/<pid>/status in MB (VmRSS, VmHWM). Linux only. */
export function procStatusMb(pid, field) {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!match) throw new Error(`${field} not found in /proc/${pid}/status`);
  return Number(match[1]) / 1024;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
