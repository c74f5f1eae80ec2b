using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Spectre.Console;

namespace Patterns.Compare;

/// <summary>The smallest, middle and largest of a row's launches.</summary>
public sealed record Spread(double Min, double Median, double Max)
{
    /// <summary>The spread allowed around the median before a figure is called unstable (±10%).</summary>
    public const double Tolerance = 0.10;

    /// <summary>Gets a value indicating whether every launch lies within ±10% of the median.</summary>
    public bool Stable => Median == 0 || (Max <= Median * (1 + Tolerance) && Min >= Median * (1 - Tolerance));

    /// <summary>The spread of <paramref name="values"/> (the median of an even count is the mean of the middle two).</summary>
    public static Spread Of(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0)
        {
            return new Spread(0, 0, 0);
        }

        var middle = sorted.Length / 2;
        var median = sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
        return new Spread(sorted[0], median, sorted[^1]);
    }
}

/// <summary>What the runner found for one row: skipped (and why), failed launches, or results.</summary>
public sealed class RowOutcome(Row row)
{
    /// <summary>Gets the row.</summary>
    public Row Row { get; } = row;

    /// <summary>Gets or sets why the row was not run (a server it needs is unreachable), or null.</summary>
    public string? Skipped { get; set; }

    /// <summary>Gets the result of each launch, by launch index (null where the launch failed).</summary>
    public List<LaunchResult?> Launches { get; } = [];

    /// <summary>Gets what went wrong in failed launches.</summary>
    public List<string> Failures { get; } = [];

    /// <summary>Gets the successful launches.</summary>
    public IEnumerable<LaunchResult> Results => Launches.OfType<LaunchResult>();

    /// <summary>Gets a value indicating whether any launch produced a result.</summary>
    public bool HasResults => Results.Any();

    /// <summary>The spread of one measure over the launches.</summary>
    public Spread Of(Func<LaunchResult, double> measure) => Spread.Of(Results.Select(measure));
}

/// <summary>Launches every selected row several times, each launch in a process of its own, and collects the results.</summary>
public sealed class Runner(Options options)
{
    /// <summary>Runs the rows and returns one outcome per row, in catalog order.</summary>
    public async Task<IReadOnlyList<RowOutcome>> RunAsync(IReadOnlyList<Row> rows)
    {
        var outcomes = rows.Select(r => new RowOutcome(r)).ToList();
        var reachability = new Dictionary<Requirement, string?>();
        foreach (var requirement in rows.Select(r => r.Requires).Distinct())
        {
            reachability[requirement] = await Servers.CheckAsync(requirement);
            if (reachability[requirement] is { } reason)
            {
                AnsiConsole.MarkupLineInterpolated($"[yellow]skipping the {requirement} rows: {reason}[/]");
            }
        }

        foreach (var outcome in outcomes)
        {
            outcome.Skipped = reachability[outcome.Row.Requires];
        }

        var runnable = outcomes.Where(o => o.Skipped is null).ToList();
        await AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .StartAsync(async progress =>
            {
                var overall = progress.AddTask("all launches", maxValue: Math.Max(1, runnable.Count * options.Launches));

                // Launch k of every row runs before launch k + 1 of any, so a ratio between rows compares launches
                // made at about the same time (the machine's load drifts).
                for (var launch = 0; launch < options.Launches; launch++)
                {
                    foreach (var outcome in runnable)
                    {
                        overall.Description = $"launch {launch + 1}/{options.Launches}: {outcome.Row.Id}";
                        var (result, failure) = await LaunchAsync(outcome.Row);
                        outcome.Launches.Add(result);
                        if (failure is not null)
                        {
                            outcome.Failures.Add($"launch {launch + 1}: {failure}");
                        }

                        overall.Increment(1);
                    }
                }

                overall.Description = "done";
            });
        return outcomes;
    }

    private async Task<(LaunchResult? Result, string? Failure)> LaunchAsync(Row row)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet")
        {
            start.ArgumentList.Add(typeof(Runner).Assembly.Location);
        }

        foreach (var argument in new[] { "--launch", row.Id, "--messages", options.Messages.ToString(System.Globalization.CultureInfo.InvariantCulture), "--timeout", ((int)options.Timeout.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture) })
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException("Could not start a launch.");
        var output = new StringBuilder();
        var errors = new StringBuilder();
        process.OutputDataReceived += (_, e) => Append(output, e.Data);
        process.ErrorDataReceived += (_, e) => Append(errors, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        // The launch stops itself at the timeout; the parent allows it a minute more to clean up, then kills it.
        using var deadline = new CancellationTokenSource(options.Timeout + TimeSpan.FromMinutes(1));
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            return (null, $"killed after {(options.Timeout + TimeSpan.FromMinutes(1)).TotalSeconds:0} s");
        }

        process.WaitForExit(); // flushes the redirected output
        string text;
        lock (output)
        {
            text = output.ToString();
        }

        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(Launch.ResultMarker, StringComparison.Ordinal));
        if (process.ExitCode == 0 && line is not null)
        {
            return (JsonSerializer.Deserialize<LaunchResult>(line[Launch.ResultMarker.Length..]), null);
        }

        string error;
        lock (errors)
        {
            error = errors.ToString().Trim();
        }

        var firstLines = string.Join(" / ", error.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).Take(3));
        return (null, $"exit code {process.ExitCode}: {(firstLines.Length > 0 ? firstLines : "no result")}");
    }

    private static void Append(StringBuilder builder, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (builder)
        {
            builder.AppendLine(line);
        }
    }
}
