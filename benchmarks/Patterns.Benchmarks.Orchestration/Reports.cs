namespace Patterns.Benchmarks.Orchestration;

/// <summary>Where the console modes (<c>--timers</c>, <c>--suspended</c>) write their reports.</summary>
internal static class Reports
{
    /// <summary>
    /// Writes <paramref name="report"/> as <c>benchmarks/results/Patterns.Benchmarks.Orchestration.{name}-report.md</c>
    /// of the repository the program runs in (found from the working directory up), or into the working directory
    /// outside a repository; returns the path.
    /// </summary>
    public static async Task<string> WriteAsync(string name, string report)
    {
        var file = $"Patterns.Benchmarks.Orchestration.{name}-report.md";
        var path = file;
        for (var directory = new DirectoryInfo(Environment.CurrentDirectory); directory is not null; directory = directory.Parent)
        {
            var results = Path.Combine(directory.FullName, "benchmarks", "results");
            if (Directory.Exists(results))
            {
                path = Path.Combine(results, file);
                break;
            }
        }

        await File.WriteAllTextAsync(path, report);
        Console.WriteLine($"wrote {path}");
        return path;
    }
}
