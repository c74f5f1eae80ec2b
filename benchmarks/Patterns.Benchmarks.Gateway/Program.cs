using System.Globalization;
using Patterns.Benchmarks.Gateway;

// Modes: the runner (default) starts the others as child processes and drives load with wrk.
var mode = args.Length > 0 ? args[0] : "run";
int Arg(int index, int fallback) => args.Length > index ? int.Parse(args[index], CultureInfo.InvariantCulture) : fallback;
switch (mode)
{
    case "backend":
        await Servers.BackendAsync(Arg(1, 5001), args.Length > 2 ? double.Parse(args[2], CultureInfo.InvariantCulture) : 0);
        break;
    case "gateway":
        await Servers.GatewayAsync(Arg(1, 5000), args[2], args[3].Split(','), args.Length > 4 && args[4] == "masking");
        break;
    case "rr":
        await Servers.RequestResponseAsync(Arg(1, 5000));
        break;
    case "alloc":
        // alloc [yarp|patterns[:variant] ...] [--requests N (20,000)] [--concurrency C (16)] [--rounds R (5)]: bytes allocated per request, in process.
        await Allocations.RunAsync(args);
        break;
    case "push":
        await Servers.PushServerAsync(Arg(1, 5000), Arg(2, 1000), Arg(3, 10));
        break;
    default:
        var filter = args.SkipWhile(a => a != "--filter").Skip(1).FirstOrDefault() ?? "*";
        var seconds = int.Parse(args.SkipWhile(a => a != "--seconds").Skip(1).FirstOrDefault() ?? "10", CultureInfo.InvariantCulture);
        var output = args.SkipWhile(a => a != "--out").Skip(1).FirstOrDefault() ?? "benchmarks/results";
        // --rounds: GatewayOverhead's interleaved rounds (each row loaded once per round for --seconds).
        var rounds = int.Parse(args.SkipWhile(a => a != "--rounds").Skip(1).FirstOrDefault() ?? "5", CultureInfo.InvariantCulture);
        if (rounds < 1 || seconds < 1)
        {
            // Checked before any server starts: no round leaves no median to report.
            throw new ArgumentOutOfRangeException(nameof(args), "--rounds and --seconds must be at least 1.");
        }

        await new Runner(seconds, output, rounds).RunAsync(filter);
        break;
}
