"""The pieces `engine.doctor` is built from.

- `probes`: one-shot network probes with their own timeouts (STUN Binding,
  rendezvous REGISTER and a relay round trip over UDP and TCP, hairpinning,
  a DHT bootstrap, name resolution that never blocks the loop or the exit);
- `portmap`: does the local gateway answer UPnP-IGD, NAT-PMP or PCP (and,
  with NAT-PMP or PCP, does a requested mapping work);
- `verdict`: pure functions from measured facts to classifications and the
  plain-words verdict (no I/O: unit-testable);
- `peer`: the two-machine peer test (`dattui doctor --peer [ID]`), every
  path one by one; `peer_proto`: its wire formats (test id, tagged control
  messages, echo probes, the sample stream), sans-IO.
"""
