// A private HyperDHT testnet (bootstrap + DHT nodes) bound on the benchmark link.
//   node testnet.js HOST PORT [SIZE]
// Prints {"event":"ready","bootstrap":"HOST:PORT"} and runs until SIGINT/SIGTERM.
// host != 127.0.0.1 makes hyperdht bind 0.0.0.0: inside the benchmark's network
// namespace that is only the veth address (and loopback).
'use strict'
const createTestnet = require('hyperdht/testnet')
const { emit, onSignal } = require('./common')

async function main () {
  const [host, port, size] = process.argv.slice(2)
  const testnet = await createTestnet(Number(size || 3), { host, port: Number(port) })
  onSignal(() => testnet.destroy())
  emit({ event: 'ready', bootstrap: testnet.bootstrap.map(b => `${b.host}:${b.port}`).join(',') })
}

main().catch(err => { console.error(err); process.exit(1) })
