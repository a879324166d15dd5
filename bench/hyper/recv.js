// Hyperdrive receiver: find the drive on Hyperswarm, replicate it and mirror it out
// to a folder, then exit.
//   node recv.js KEY_HEX OUT_DIR STORAGE_DIR BOOTSTRAP
// Prints {"event":"done","files":N,"bytes":B,"connect_s":S,"total_s":T}.
'use strict'
const Corestore = require('corestore')
const Hyperdrive = require('hyperdrive')
const Hyperswarm = require('hyperswarm')
const Localdrive = require('localdrive')
const { parseBootstrap, emit } = require('./common')

async function main () {
  const [key, out, storage, bootstrap] = process.argv.slice(2)
  const t0 = process.hrtime.bigint()
  const secs = () => Number(process.hrtime.bigint() - t0) / 1e9
  const store = new Corestore(storage)
  const drive = new Hyperdrive(store, Buffer.from(key, 'hex'))
  await drive.ready()

  const swarm = new Hyperswarm({ bootstrap: parseBootstrap(bootstrap) })
  let connectS = null
  swarm.on('connection', (conn) => {
    if (connectS === null) connectS = secs()
    store.replicate(conn)
  })
  const done = drive.findingPeers()
  swarm.join(drive.discoveryKey, { server: false, client: true })
  swarm.flush().then(done, done)

  // the sender has announced before we start: wait until we know its latest version
  await drive.update({ wait: true })
  if (drive.version <= 1) throw new Error(`drive is empty after update (version ${drive.version}): no peer?`)

  const mirror = drive.mirror(new Localdrive(out))
  await mirror.done()
  emit({ event: 'done', files: mirror.count.add, bytes: mirror.bytesAdded, version: drive.version, connect_s: connectS, total_s: secs() })

  await swarm.destroy()
  await drive.close()
  await store.close()
  process.exit(0)
}

main().catch(err => { console.error(err); process.exit(1) })
