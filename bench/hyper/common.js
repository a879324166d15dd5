// Shared bits of the Hyperdrive peer scripts (bench/compare.py runs them in namespaces).
'use strict'

// "10.201.0.1:49737,10.201.0.1:49738" -> [{ host, port }, ...].  Always explicit:
// an empty bootstrap list would make HyperDHT fall back to the public nodes.
function parseBootstrap (s) {
  const out = []
  for (const hp of String(s || '').split(',')) {
    if (!hp) continue
    const i = hp.lastIndexOf(':')
    out.push({ host: hp.slice(0, i), port: Number(hp.slice(i + 1)) })
  }
  if (out.length === 0) throw new Error('no bootstrap nodes given: refusing to use the public DHT')
  return out
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

// Exit on SIGINT/SIGTERM after running `close` (at most 10 s).
function onSignal (close) {
  let closing = false
  const handler = () => {
    if (closing) return
    closing = true
    const t = setTimeout(() => process.exit(0), 10000)
    Promise.resolve().then(close).catch(() => {}).finally(() => { clearTimeout(t); process.exit(0) })
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
}

module.exports = { parseBootstrap, emit, onSignal }
