"""Times Google's dp_accounting 0.6.0 on the accountant benchmark's points.

For sampling rate q, noise multiplier sigma (or a target epsilon), steps and delta, times
(a) epsilon with the PLD accountant (value discretization interval 1e-4) and the RDP
accountant, and (b) calibrating sigma to the target epsilon with `calibrate_dp_mechanism`
(its default bracket search, tolerance --tol). Prints one line per measurement:
`accountant task value median_seconds first_seconds mean_cpu_seconds` (wall clock, and
CPU time of this process), like the Rust example `epsilon`.
"""

import argparse
import statistics
import time

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

ACCOUNTANTS = {
    "pld": lambda: pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4),
    "rdp": rdp_privacy_accountant.RdpAccountant,
}


def timed(fn, repeat):
    times, value = [], None
    cpu_start = time.process_time()
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu_start) / repeat
    return value, statistics.median(times), times[0], cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--q", type=float, required=True)
    parser.add_argument("--sigma", type=float, required=True)
    parser.add_argument("--target-epsilon", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--delta", type=float, required=True)
    parser.add_argument("--tol", type=float, default=1e-3, help="calibration tolerance in sigma")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calibrate-repeat", type=int, default=1)
    args = parser.parse_args()

    def event(sigma):
        sampled = dp_event.PoissonSampledDpEvent(args.q, dp_event.GaussianDpEvent(sigma))
        return dp_event.SelfComposedDpEvent(sampled, args.steps)

    for name, make in ACCOUNTANTS.items():
        def epsilon():
            accountant = make()
            accountant.compose(event(args.sigma))
            return accountant.get_epsilon(args.delta)

        value, median, first, cpu = timed(epsilon, args.repeat)
        print(f"{name} epsilon {value:.10f} {median:.6f} {first:.6f} {cpu:.6f}", flush=True)

        def calibrate():
            return dp_accounting.calibrate_dp_mechanism(
                make, event, args.target_epsilon, args.delta, tol=args.tol
            )

        value, median, first, cpu = timed(calibrate, args.calibrate_repeat)
        print(f"{name} calibrate {value:.10f} {median:.6f} {first:.6f} {cpu:.6f}", flush=True)


if __name__ == "__main__":
    main()
