// Hyperdrive sender: mirror a folder into a new Hyperdrive and serve it on Hyperswarm.
//   node send.js SRC_DIR STORAGE_DIR BOOTSTRAP
// Prints {"event":"ready","key":HEX,"files":N,"bytes":B,"import_s":S} once the drive
// holds the folder and the swarm has announced it, then serves until SIGINT/SIGTERM.
'use strict'
const Corestore = require('corestore')
const Hyperdrive = require('hyperdrive')
const HyperDHT = require('hyperdht')
const Hyperswarm = require('hyperswarm')
const Localdrive = require('localdrive')
const { parseBootstrap, emit, onSignal } = require('./common')

async function main () {
  const [src, storage, bootstrap] = process.argv.slice(2)
  const store = new Corestore(storage)
  const drive = new Hyperdrive(store)
  await drive.ready()

  const t0 = process.hrtime.bigint()
  const mirror = new Localdrive(src).mirror(drive)
  await mirror.done()
  const importS = Number(process.hrtime.bigint() - t0) / 1e9

  // The sender sits on a public-style address (a veth with no NAT), so it is
  // reachable: say so.  hyperdht would otherwise decide it is firewalled (its own
  // reachability probe needs DHT nodes on other hosts; the testnet lives in this
  // namespace) and both ends then hole-punch, which does not complete between two
  // namespaces here: the client reports the connection open, the server never sees it.
  const dht = new HyperDHT({ bootstrap: parseBootstrap(bootstrap), firewalled: false })
  const swarm = new Hyperswarm({ dht })
  let peers = 0
  swarm.on('connection', (conn) => { peers++; store.replicate(conn) })
  onSignal(async () => { await swarm.destroy(); await drive.close(); await store.close() })

  const discovery = swarm.join(drive.discoveryKey, { server: true, client: false })
  await discovery.flushed()
  emit({
    event: 'ready',
    key: drive.key.toString('hex'),
    files: mirror.count.add,
    bytes: mirror.bytesAdded,
    import_s: importS
  })
  setInterval(() => {}, 1 << 30) // keep serving
  process.on('exit', () => process.stderr.write(`send.js: ${peers} connection(s)\n`))
}

main().catch(err => { console.error(err); process.exit(1) })
