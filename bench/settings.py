"""The analysis every figure runs, so that the service, pure inference and the reference do the same work."""

# The service's form fields for every job (and the pure / reference passes that P1 and P2 compare with).
SEGMENT_SECONDS = 10
FRAMES = 8
MAX_TOKENS = 32

# P3's second job: every frame of 1 s segments decoded and sent to the model (issue 14, item 9).
HEAVY_JOB = {"segment_duration": 1, "frames_per_segment": 64}

MIB = 1024 * 1024
