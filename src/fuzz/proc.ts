/**
 * Running one command as a process of its own group, with a timeout and a memory cap: a watchdog polls
 * /proc for every process of the group (the CLI and its background worker), sums their resident
 * memory, keeps the peak (also each process's own high-water mark, VmHWM) and kills the whole group
 * when the sum passes the cap or the time runs out. Address-space limits (prlimit --as) are not used:
 * V8 and WebAssembly reserve far more address space than they touch, so they would fail healthy runs.
 */
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

export interface ProcOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs: number;
  memoryCapBytes: number;
  /** Bytes of stderr kept (its line count and longest line are measured over all of it). */
  keepStderr?: number;
  keepStdout?: number;
  pollMs?: number;
  /** Stderr lines that are progress, not diagnostics (counted apart). */
  progress?: RegExp;
}

export interface ProcResult {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  memoryCapHit: boolean;
  wallMs: number;
  /** Peak of the group's summed VmRSS, or the largest VmHWM seen, whichever is larger (KiB). */
  peakRssKb: number;
  stderrHead: string;
  stderrBytes: number;
  /** Non-empty stderr lines, and the longest line in characters (over the whole stream). */
  stderrLines: string[];
  stderrLineCount: number;
  stderrLongestLine: number;
  /** Lines matching `progress`. */
  stderrProgressLines: number;
  stdoutHead: string;
  stdoutBytes: number;
  /** Processes of the group still alive after the main one ended (killed then). */
  leftProcesses: number;
}

/** Processes whose process group is `pgid`, with their RSS and high-water mark (KiB). */
export function groupProcesses(pgid: number): { pid: number; rssKb: number; hwmKb: number }[] {
  const out: { pid: number; rssKb: number; hwmKb: number }[] = [];
  let names: string[];
  try {
    names = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const stat = readFileSync(`/proc/${n}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // Fields after the command: state, ppid, pgrp, ... (zombies are gone, only not yet reaped).
      if (Number(rest[2]) !== pgid || rest[0] === "Z") continue;
      const status = readFileSync(`/proc/${n}/status`, "utf8");
      const rss = /VmRSS:\s+(\d+) kB/.exec(status);
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
      out.push({ pid: Number(n), rssKb: rss ? Number(rss[1]) : 0, hwmKb: hwm ? Number(hwm[1]) : 0 });
    } catch {
      // The process ended meanwhile.
    }
  }
  return out;
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

/** Streams stderr into: the first bytes, the non-empty lines (first 50), line count and longest line. */
class LineMeter {
  head = "";
  bytes = 0;
  lines: string[] = [];
  count = 0;
  longest = 0;
  progressCount = 0;
  private current = 0;
  private currentText = "";
  constructor(
    private readonly keep: number,
    private readonly progress: RegExp | undefined,
  ) {}
  push(chunk: Buffer): void {
    this.bytes += chunk.length;
    const s = chunk.toString("utf8");
    if (this.head.length < this.keep) this.head += s.slice(0, this.keep - this.head.length);
    for (const ch of s.split(/(\n)/)) {
      if (ch === "\n") this.endLine();
      else {
        this.current += ch.length;
        if (this.currentText.length < 4000) this.currentText += ch.slice(0, 4000 - this.currentText.length);
      }
    }
  }
  private endLine(): void {
    if (this.current > 0 && this.progress?.test(this.currentText)) this.progressCount++;
    else if (this.current > 0 && this.currentText.trim() !== "") {
      this.count++;
      if (this.lines.length < 50) this.lines.push(this.currentText);
    }
    this.longest = Math.max(this.longest, this.current);
    this.current = 0;
    this.currentText = "";
  }
  end(): void {
    if (this.current > 0) this.endLine();
  }
}

export function runProcess(cmd: string, args: readonly string[], o: ProcOptions): Promise<ProcResult> {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      // spawn refuses some arguments outright (a NUL byte): no process, reported as such.
      resolve({
        exitCode: null,
        signal: `spawn error: ${(e as Error).message}`,
        timedOut: false,
        memoryCapHit: false,
        wallMs: 0,
        peakRssKb: 0,
        stderrHead: "",
        stderrBytes: 0,
        stderrLines: [],
        stderrLineCount: 0,
        stderrLongestLine: 0,
        stderrProgressLines: 0,
        stdoutHead: "",
        stdoutBytes: 0,
        leftProcesses: 0,
      });
      return;
    }
    const pgid = child.pid ?? -1;
    const err = new LineMeter(o.keepStderr ?? 2048, o.progress);
    let stdoutHead = "";
    let stdoutBytes = 0;
    const keepOut = o.keepStdout ?? 1024;
    child.stdout!.on("data", (c: Buffer) => {
      stdoutBytes += c.length;
      if (stdoutHead.length < keepOut) stdoutHead += c.toString("utf8").slice(0, keepOut - stdoutHead.length);
    });
    child.stderr!.on("data", (c: Buffer) => err.push(c));
    let timedOut = false;
    let memoryCapHit = false;
    let peakSum = 0;
    let peakHwm = 0;
    const capKb = o.memoryCapBytes / 1024;
    const poll = () => {
      if (pgid < 0) return;
      const procs = groupProcesses(pgid);
      const sum = procs.reduce((s, p) => s + p.rssKb, 0);
      peakSum = Math.max(peakSum, sum);
      for (const p of procs) peakHwm = Math.max(peakHwm, p.hwmKb);
      if (sum > capKb && !memoryCapHit) {
        memoryCapHit = true;
        killGroup(pgid);
      }
    };
    // Poll often at first (short runs), then every pollMs.
    const early = [10, 30, 60, 100].map((ms) => setTimeout(poll, ms));
    const watchdog = setInterval(poll, o.pollMs ?? 100);
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(pgid);
    }, o.timeoutMs);
    let spawnError: Error | undefined;
    child.on("error", (e) => {
      spawnError = e;
    });
    // When the CLI itself exits, whatever else of its group still runs after a short grace is a
    // process left behind: counted, then killed (so the streams close).
    let exitInfo: { code: number | null; signal: string | null } | undefined;
    let leftCount = 0;
    let exitedAt: bigint | undefined;
    let leftChecked: Promise<void> = Promise.resolve();
    child.on("exit", (code, signal) => {
      exitInfo = { code, signal };
      exitedAt = process.hrtime.bigint();
      clearInterval(watchdog);
      clearTimeout(timer);
      for (const t of early) clearTimeout(t);
      leftChecked = new Promise((done) =>
        setTimeout(() => {
          const left = pgid > 0 ? groupProcesses(pgid) : [];
          leftCount = left.length;
          if (left.length > 0) killGroup(pgid);
          done();
        }, 300),
      );
    });
    child.on("close", (code, signal) => {
      void leftChecked.then(() => {
        err.end();
        const wallMs = Number((exitedAt ?? process.hrtime.bigint()) - started) / 1e6;
        const info = exitInfo ?? { code, signal };
        resolve({
          exitCode: info.code,
          signal: info.signal ?? (spawnError ? `spawn error: ${spawnError.message}` : null),
          timedOut,
          memoryCapHit,
          wallMs: Math.round(wallMs),
          peakRssKb: Math.max(peakSum, peakHwm),
          stderrHead: err.head,
          stderrBytes: err.bytes,
          stderrLines: err.lines,
          stderrLineCount: err.count,
          stderrLongestLine: err.longest,
          stderrProgressLines: err.progressCount,
          stdoutHead,
          stdoutBytes,
          leftProcesses: leftCount,
        });
      });
    });
  });
}
