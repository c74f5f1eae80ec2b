using System.Globalization;
using Patterns.Compare;
using Spectre.Console;

// Patterns.Compare: one workload (100,000 "order placed" messages) through every pattern × transport/store.
//   dotnet run -c Release --project benchmarks/Patterns.Compare                 3 launches per row, results in benchmarks/results/
//   dotnet run -c Release --project benchmarks/Patterns.Compare -- --smoke      tiny sizes, one launch (CI)
// Options: --launches N, --messages N, --filter id-or-pattern[,...], --timeout SECONDS (per launch), --out DIRECTORY,
//          --note TEXT (written under the report's heading), --list, --render compare.json (write the report of a saved
//          run again; give the run's --launches, --messages and --note too). A launch is this program started with --launch ID.
var options = Options.Parse(args);
if (options.Launch is { } id)
{
    var row = Catalog.Rows.FirstOrDefault(r => r.Id == id);
    if (row is null)
    {
        await Console.Error.WriteLineAsync($"No row '{id}'. Rows: {string.Join(", ", Catalog.Rows.Select(r => r.Id))}");
        return 64;
    }

    return await Launch.RunAsync(row, options.Messages, options.Timeout);
}

if (Console.IsOutputRedirected)
{
    AnsiConsole.Profile.Width = 240; // a log file has no width: keep the table's rows on one line each
}

if (options.Render is { } saved)
{
    // Renders the report of a saved run again (after a change to the report's format), without running anything.
    var loaded = Report.Load(saved);
    var loadedSummaries = RowSummary.Of(loaded);
    Report.Print(loaded, loadedSummaries);
    Report.Write(options.Output, options, loaded, loadedSummaries);
    return 0;
}

var rows = Catalog.Rows.Where(options.Selects).ToList();
if (options.List)
{
    foreach (var row in rows)
    {
        Console.WriteLine($"{row.Id,-18} {row.Pattern} over {row.Transport}: {row.Setup}");
    }

    return 0;
}

if (rows.Count == 0)
{
    await Console.Error.WriteLineAsync($"--filter {options.Filter} selects no row. Rows: {string.Join(", ", Catalog.Rows.Select(r => r.Id))}");
    return 64;
}

AnsiConsole.MarkupLineInterpolated($"[bold]Patterns.Compare[/]: {rows.Count} rows × {options.Launches} launch(es) × {options.Messages:N0} messages{(options.Smoke ? " (smoke)" : string.Empty)}");
var outcomes = await new Runner(options).RunAsync(rows);
var summaries = RowSummary.Of(outcomes);
Report.Print(outcomes, summaries);
Report.Write(options.Output, options, outcomes, summaries);
AnsiConsole.MarkupLineInterpolated($"wrote {Path.Combine(options.Output, "compare.md")}, compare.json, compare.png and compare.svg");

// A failed launch fails the run (CI's smoke run must notice); a skipped server does not.
return outcomes.Any(o => o.Failures.Count > 0) ? 1 : 0;

namespace Patterns.Compare
{
    /// <summary>The command line.</summary>
    public sealed record Options(
        bool Smoke,
        int Launches,
        int Messages,
        string? Filter,
        TimeSpan Timeout,
        string Output,
        string? Note,
        bool List,
        string? Launch,
        string? Render)
    {
        /// <summary>Parses the arguments; unknown ones fail with a message naming them.</summary>
        public static Options Parse(string[] args)
        {
            var smoke = args.Contains("--smoke");
            string? Value(string name)
            {
                var index = Array.IndexOf(args, name);
                return index >= 0 && index + 1 < args.Length ? args[index + 1] : null;
            }

            int Number(string name, int fallback)
            {
                var text = Value(name);
                if (text is null)
                {
                    return fallback;
                }

                return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n > 0
                    ? n
                    : throw new ArgumentException($"{name} needs a positive whole number, not '{text}'.");
            }

            var known = new HashSet<string> { "--smoke", "--list", "--launches", "--messages", "--filter", "--timeout", "--out", "--note", "--launch", "--render" };
            for (var i = 0; i < args.Length; i++)
            {
                if (!known.Contains(args[i]))
                {
                    throw new ArgumentException($"Unknown argument '{args[i]}'. Known: {string.Join(", ", known)}.");
                }

                if (args[i] is not ("--smoke" or "--list"))
                {
                    i++;
                }
            }

            var output = Value("--out") ?? (smoke
                ? Path.Combine(Path.GetTempPath(), "patterns-compare-smoke")
                : Path.Combine(RepositoryRoot(), "benchmarks", "results"));
            return new Options(
                smoke,
                Number("--launches", smoke ? 1 : 3),
                Number("--messages", smoke ? 500 : 100_000),
                Value("--filter"),
                TimeSpan.FromSeconds(Number("--timeout", smoke ? 60 : 300)),
                output,
                Value("--note"),
                args.Contains("--list"),
                Value("--launch"),
                Value("--render"));
        }

        /// <summary>Whether the filter selects <paramref name="row"/> (by id or pattern, any of comma-separated parts).</summary>
        public bool Selects(Row row) => Filter is null || Filter.Split(',').Any(part =>
            row.Id.Contains(part, StringComparison.OrdinalIgnoreCase) || row.Pattern.Contains(part, StringComparison.OrdinalIgnoreCase));

        private static string RepositoryRoot()
        {
            for (var directory = new DirectoryInfo(Environment.CurrentDirectory); directory is not null; directory = directory.Parent)
            {
                if (File.Exists(Path.Combine(directory.FullName, "Patterns.Core.sln")))
                {
                    return directory.FullName;
                }
            }

            return Environment.CurrentDirectory;
        }
    }
}
