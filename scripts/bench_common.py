"""What the Python sides of the benchmarks share."""


def peak_rss_mb():
    """This process's peak RSS in MiB (VmHWM; getrusage's ru_maxrss would carry the parent's
    peak across exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
