"""The analysis every figure runs, so that the service, pure inference and the reference do the same work."""

# The service's form fields for every job (and the pure / reference passes that P1 and P2 compare with).
SEGMENT_SECONDS = 10
FRAMES = 8
MAX_TOKENS = 32
# Every candidate frame sent, every segment asked: the same work as the pure and reference passes, which send all
# FRAMES. The default ("changes") sends 4-7 of the 8 on the bench video (its drifting background comes back to the
# same picture every ~3.8 s); what it saves is P7's figure (bench/figures/p7_sampling.py).
FRAME_SELECTION = "even"

# P3's second job: every frame of 1 s segments decoded and sent to the model (issue 14, item 9).
HEAVY_JOB = {"segment_duration": 1, "frames_per_segment": 64}

MIB = 1024 * 1024
