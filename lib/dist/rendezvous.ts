/**
 * The bootstrap of a torchrun / Slurm launch (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) without MPI: rank 0 listens
 * on MASTER_PORT and hands every other rank the same bytes -- NCCL's 128-byte unique id, which ncclCommInitRank needs
 * on every rank. Bootstrap only: no tensor ever goes over these sockets. Each rank says its number first; rank 0
 * answers once all have arrived, so a rank that never comes is named in the error.
 */
import * as net from 'net'
import { RecodeError } from '../errors'

export interface RendezvousOptions {
  rank: number
  size: number
  /** Rank 0's address (MASTER_ADDR); rank 0 listens on every interface. */
  host: string
  port: number
  /** What rank 0 hands out (ignored on other ranks). */
  payload?: Uint8Array
  /** Give up after this long (default 60 s), naming the ranks that did not come. */
  timeoutMs?: number
}

/** Rank 0's payload, on every rank. */
export async function rendezvous(o: RendezvousOptions): Promise<Uint8Array> {
  const timeoutMs = o.timeoutMs ?? 60000
  if (o.size === 1) return o.payload ?? new Uint8Array(0)
  if (o.rank === 0) return await serve(o, timeoutMs)
  return await fetchPayload(o, timeoutMs)
}

async function serve(o: RendezvousOptions, timeoutMs: number): Promise<Uint8Array> {
  const payload = o.payload ?? new Uint8Array(0)
  const frame = Buffer.alloc(4 + payload.length)
  frame.writeUInt32BE(payload.length, 0)
  frame.set(payload, 4)
  const waiting = new Map<number, net.Socket>()
  return await new Promise<Uint8Array>((resolve, reject) => {
    const server = net.createServer((socket) => {
      let got = Buffer.alloc(0)
      socket.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d])
        if (got.length < 4) return
        const r = got.readUInt32BE(0)
        if (r < 1 || r >= o.size || waiting.has(r)) {
          socket.destroy()
          return
        }
        waiting.set(r, socket)
        if (waiting.size === o.size - 1) {
          server.close()
          // resolved once every frame is with the kernel: the caller may block in NCCL's init right after, and an
          // unwritten frame would then leave the other ranks waiting for it
          let left = waiting.size
          for (const s of waiting.values())
            s.end(frame, () => {
              if (--left > 0) return
              clearTimeout(timer)
              resolve(payload)
            })
        }
      })
      socket.on('error', () => {})
    })
    const timer = setTimeout(() => {
      const missing = Array.from({ length: o.size - 1 }, (_, k) => k + 1).filter((r) => !waiting.has(r))
      for (const s of waiting.values()) s.destroy()
      server.close()
      reject(
        new RecodeError(
          'ERR_DIST',
          missing.length > 0
            ? `rendezvous on port ${o.port}: rank(s) ${missing.join(', ')} of ${o.size} did not arrive within ${timeoutMs / 1000} s`
            : `rendezvous on port ${o.port}: the id did not reach every rank within ${timeoutMs / 1000} s (a connection broke)`
        )
      )
    }, timeoutMs)
    server.on('error', (err) => {
      clearTimeout(timer)
      reject(
        new RecodeError(
          'ERR_DIST',
          `rendezvous: rank 0 cannot listen on port ${o.port}: ${err.message} (another program holds it? RECODE_RENDEZVOUS_PORT picks another)`
        )
      )
    })
    server.listen(o.port)
  })
}

async function fetchPayload(o: RendezvousOptions, timeoutMs: number): Promise<Uint8Array> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await once(o, deadline)
    } catch (err) {
      // rank 0 may not listen yet: try again until the deadline
      if (Date.now() >= deadline)
        throw new RecodeError(
          'ERR_DIST',
          `rendezvous: rank ${o.rank} could not get the id from rank 0 at ${o.host}:${o.port} within ${timeoutMs / 1000} s (${(err as Error).message})`
        )
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
}

async function once(o: RendezvousOptions, deadline: number): Promise<Uint8Array> {
  return await new Promise<Uint8Array>((resolve, reject) => {
    const socket = net.connect({ host: o.host, port: o.port })
    let got = Buffer.alloc(0)
    const timer = setTimeout(
      () => {
        socket.destroy()
        reject(new Error('timed out'))
      },
      Math.max(1, deadline - Date.now())
    )
    socket.on('connect', () => {
      const b = Buffer.alloc(4)
      b.writeUInt32BE(o.rank, 0)
      socket.write(b)
    })
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
    })
    socket.on('end', () => {
      clearTimeout(timer)
      if (got.length >= 4 && got.length === 4 + got.readUInt32BE(0)) resolve(new Uint8Array(got.subarray(4)))
      else reject(new Error('rank 0 closed the connection early'))
    })
    socket.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}
