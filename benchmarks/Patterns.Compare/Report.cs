using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using ScottPlot;
using Spectre.Console;

namespace Patterns.Compare;

/// <summary>One row's figures: the spreads of every measure, and its throughput relative to its pattern's first row.</summary>
public sealed record RowSummary(
    RowOutcome Outcome,
    Spread Throughput,
    Spread? Ratio,
    string? ReferenceId,
    Spread P50,
    Spread P99,
    Spread Cpu,
    Spread Bytes,
    Spread PeakMegabytes)
{
    /// <summary>Summarizes every outcome; ratios compare launch k of a row with launch k of its pattern's first row.</summary>
    public static IReadOnlyList<RowSummary> Of(IReadOnlyList<RowOutcome> outcomes)
    {
        var summaries = new List<RowSummary>();
        foreach (var outcome in outcomes.Where(o => o.HasResults))
        {
            var reference = outcomes.First(o => o.Row.Pattern == outcome.Row.Pattern && o.HasResults);
            Spread? ratio = null;
            if (reference != outcome)
            {
                var ratios = outcome.Launches.Zip(reference.Launches)
                    .Where(pair => pair.First is not null && pair.Second is not null)
                    .Select(pair => pair.First!.Throughput / pair.Second!.Throughput)
                    .ToList();
                ratio = ratios.Count > 0 ? Spread.Of(ratios) : null;
            }

            summaries.Add(new RowSummary(
                outcome,
                outcome.Of(r => r.Throughput),
                ratio,
                reference == outcome ? null : reference.Row.Id,
                outcome.Of(r => r.P50Microseconds),
                outcome.Of(r => r.P99Microseconds),
                outcome.Of(r => r.CpuMicrosecondsPerMessage),
                outcome.Of(r => r.BytesPerMessage),
                outcome.Of(r => r.PeakWorkingSetBytes / 1048576.0)));
        }

        return summaries;
    }
}

/// <summary>Prints the table, and writes the markdown report, the raw results and the chart.</summary>
public static class Report
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>Prints the table to the console.</summary>
    public static void Print(IReadOnlyList<RowOutcome> outcomes, IReadOnlyList<RowSummary> summaries)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var column in Columns)
        {
            table.AddColumn(new TableColumn(column));
        }

        foreach (var s in summaries)
        {
            table.AddRow(Cells(s).Select(Markup.Escape).ToArray());
        }

        AnsiConsole.Write(table);
        foreach (var outcome in outcomes)
        {
            if (outcome.Skipped is not null)
            {
                AnsiConsole.MarkupLineInterpolated($"[yellow]skipped {outcome.Row.Id}: {outcome.Skipped}[/]");
            }

            foreach (var failure in outcome.Failures)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{outcome.Row.Id} {failure}[/]");
            }
        }
    }

    /// <summary>Writes compare.md, compare.json, compare.png and compare.svg into <paramref name="directory"/>.</summary>
    public static void Write(string directory, Options options, IReadOnlyList<RowOutcome> outcomes, IReadOnlyList<RowSummary> summaries)
    {
        Directory.CreateDirectory(directory);
        Chart(summaries, options, Path.Combine(directory, "compare"));
        File.WriteAllText(Path.Combine(directory, "compare.md"), Markdown(options, outcomes, summaries));
        var raw = outcomes.Select(o => new SavedOutcome(o.Row.Id, o.Skipped, o.Failures, o.Launches));
        File.WriteAllText(Path.Combine(directory, "compare.json"), JsonSerializer.Serialize(raw, new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>Reads the outcomes a run saved in compare.json (to render its report again).</summary>
    public static IReadOnlyList<RowOutcome> Load(string path)
    {
        var saved = JsonSerializer.Deserialize<List<SavedOutcome>>(File.ReadAllText(path)) ?? [];
        var outcomes = new List<RowOutcome>();
        foreach (var s in saved)
        {
            var row = Catalog.Rows.FirstOrDefault(r => r.Id == s.Id) ?? throw new InvalidDataException($"{path} names a row '{s.Id}' that the catalog does not have.");
            var outcome = new RowOutcome(row) { Skipped = s.Skipped };
            outcome.Launches.AddRange(s.Launches);
            outcome.Failures.AddRange(s.Failures);
            outcomes.Add(outcome);
        }

        return outcomes;
    }

    /// <summary>What compare.json holds per row.</summary>
    public sealed record SavedOutcome(string Id, string? Skipped, List<string> Failures, List<LaunchResult?> Launches);

    private static readonly string[] Columns =
        ["Pattern", "Transport / store", "Throughput (msg/s)", "vs first row", "p50 latency", "p99 latency", "CPU / msg", "Allocated / msg", "Peak memory"];

    private static IEnumerable<string> Cells(RowSummary s) =>
    [
        s.Outcome.Row.Pattern,
        s.Outcome.Row.Transport,
        Format(s.Throughput, v => v.ToString("N0", Invariant)),
        s.Ratio is null ? "1× (reference)" : $"{Format(s.Ratio, Ratio)}{(s.Ratio.Stable ? string.Empty : " unstable")}",
        Format(s.P50, Duration),
        Format(s.P99, Duration),
        Format(s.Cpu, v => v.ToString("0.0", Invariant) + " µs"),
        Format(s.Bytes, Bytes),
        Format(s.PeakMegabytes, v => v.ToString("0", Invariant) + " MB"),
    ];

    private static string Format(Spread spread, Func<double, string> format) =>
        spread.Min == spread.Max ? format(spread.Median) : $"{format(spread.Median)} ({format(spread.Min)}–{format(spread.Max)})";

    private static string Ratio(double ratio) => ratio switch
    {
        >= 10 => ratio.ToString("N0", Invariant) + "×",
        >= 0.1 => ratio.ToString("0.00", Invariant) + "×",
        _ => ratio.ToString("0.00##", Invariant) + "×",
    };

    private static string Duration(double microseconds) => microseconds switch
    {
        >= 1_000_000 => (microseconds / 1_000_000).ToString("0.00", Invariant) + " s",
        >= 1_000 => (microseconds / 1_000).ToString("0.0", Invariant) + " ms",
        _ => microseconds.ToString("0", Invariant) + " µs",
    };

    private static string Bytes(double bytes) => bytes >= 10_240
        ? (bytes / 1024).ToString("0", Invariant) + " KB"
        : bytes.ToString("0", Invariant) + " B";

    private static string Markdown(Options options, IReadOnlyList<RowOutcome> outcomes, IReadOnlyList<RowSummary> summaries)
    {
        var md = new StringBuilder();
        md.AppendLine("# Patterns compared: one workload, every pattern, transport and store");
        md.AppendLine();
        md.AppendLine(CultureInfo.InvariantCulture, $"Run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC: {options.Launches} launch(es) of each row, {options.Messages:N0} \"order placed\" messages per launch (after a warm-up), {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, .NET {Environment.Version}.");
        if (options.Note is { Length: > 0 } note)
        {
            md.AppendLine();
            md.AppendLine(note);
        }

        md.AppendLine();
        md.AppendLine("![throughput per row](compare.png)");
        md.AppendLine();
        md.AppendLine("Each cell is the median of the launches, with the smallest and largest in parentheses. \"vs first row\" is the row's throughput over the throughput of its pattern's first row, launch by launch; it is marked **unstable** when a launch's ratio lies more than ±10% from the median.");
        md.AppendLine();
        md.AppendLine("| " + string.Join(" | ", Columns) + " |");
        md.AppendLine("|" + string.Concat(Enumerable.Repeat(" --- |", Columns.Length)));
        foreach (var s in summaries)
        {
            md.AppendLine("| " + string.Join(" | ", Cells(s).Select(c => c.Replace("unstable", "**unstable**", StringComparison.Ordinal))) + " |");
        }

        var skipped = outcomes.Where(o => o.Skipped is not null || o.Failures.Count > 0).ToList();
        if (skipped.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("Not measured:");
            md.AppendLine();
            foreach (var o in skipped)
            {
                md.AppendLine(CultureInfo.InvariantCulture, $"- `{o.Row.Id}`: {o.Skipped ?? string.Join("; ", o.Failures)}");
            }
        }

        md.AppendLine();
        md.AppendLine("What each row does (every handler runs the same code: it prices the order's lines):");
        md.AppendLine();
        md.AppendLine("| Row | Pattern | Transport / store | Setup and durability |");
        md.AppendLine("| --- | --- | --- | --- |");
        foreach (var o in outcomes)
        {
            md.AppendLine(CultureInfo.InvariantCulture, $"| `{o.Row.Id}` | {o.Row.Pattern} | {o.Row.Transport} | {o.Row.Setup} |");
        }

        return md.ToString();
    }

    private static void Chart(IReadOnlyList<RowSummary> summaries, Options options, string pathWithoutExtension)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var patterns = summaries.Select(s => s.Outcome.Row.Pattern).Distinct().ToList();
        var rowTicks = new ScottPlot.TickGenerators.NumericManual();
        const double floor = 1; // 10 msg/s
        for (var i = 0; i < summaries.Count; i++)
        {
            var s = summaries[i];
            var position = summaries.Count - 1 - i;
            var color = palette.GetColor(patterns.IndexOf(s.Outcome.Row.Pattern));
            var bar = plot.Add.Bar(new Bar
            {
                Position = position,
                Value = Math.Max(floor, Math.Log10(Math.Max(1, s.Throughput.Median))),
                ValueBase = floor,
                FillColor = color,
                Orientation = Orientation.Horizontal,
                Size = 0.7,
            });
            _ = bar;
            if (s.Throughput.Min != s.Throughput.Max)
            {
                var range = plot.Add.Line(Math.Log10(s.Throughput.Min), position, Math.Log10(s.Throughput.Max), position);
                range.LineWidth = 2;
                range.Color = Colors.Black;
                range.MarkerSize = 0;
            }

            rowTicks.AddMajor(position, $"{s.Outcome.Row.Pattern} · {s.Outcome.Row.Transport}");
        }

        var throughputTicks = new ScottPlot.TickGenerators.NumericManual();
        var top = summaries.Count == 0 ? 6 : Math.Max(6, Math.Ceiling(Math.Log10(Math.Max(10, summaries.Max(s => s.Throughput.Max)))));
        for (var e = 1; e <= top; e++)
        {
            throughputTicks.AddMajor(e, Math.Pow(10, e).ToString("N0", Invariant));
        }

        plot.Axes.Left.TickGenerator = rowTicks;
        plot.Axes.Bottom.TickGenerator = throughputTicks;
        plot.Axes.Bottom.Label.Text = "messages per second (log scale): median bar, min–max line";
        plot.Axes.SetLimits(floor, top + 0.15, -0.6, summaries.Count - 0.4);
        plot.Title($"Patterns: {options.Messages:N0} orders per launch, {options.Launches} launch(es) per row");
        plot.Grid.YAxisStyle.IsVisible = false;
        var height = 120 + (36 * Math.Max(1, summaries.Count));
        plot.SavePng(pathWithoutExtension + ".png", 1100, height);
        plot.SaveSvg(pathWithoutExtension + ".svg", 1100, height);
    }
}
