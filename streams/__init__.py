"""Pure stream processing: windows, market math, models, detectors. No I/O, no Kafka."""
