"""The Redis keys the engine and its clients share: the request stream, its consumer
group, the dead letters and the stream's reset mark. No imports, so that `diagnose` reads
the stream without loading the ML libraries."""

STREAM = "ml:requests"
GROUP = "ml-engine"
DEAD_LETTERS = "ml:dead-letters"
# When the engine last found its stream or group gone (FLUSHALL, a restore, a Redis
# restarted empty) and recreated it: epoch milliseconds. A client whose request waited
# across that moment learns its request was lost, instead of only "no answer".
STREAM_RESET = "ml:stream-reset"
