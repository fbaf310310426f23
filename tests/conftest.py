"""Suite-wide settings: hypothesis runs without per-example deadlines because CI machines
have 2 cores shared by process-level tests, and a slow example is not a wrong one."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fedchain",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("fedchain")
