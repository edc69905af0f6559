"""Load for `cartstream bench pipeline`: N carts replayed at real-time pace from pre-generated,
pre-encoded simulator output, by a generator process that is not the bottleneck.

`recording` builds what the carts send (a few simulated template carts, copied to N carts with
their own ids and phases); `generator` replays it on schedule and measures its own send rate and
lag behind that schedule, so a run can show it kept pace."""
