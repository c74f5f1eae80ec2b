using System.Diagnostics;

namespace Patterns.Etl.Tests;

/// <summary>Runs Patterns.Etl.CrashHost as a child process that reports each committed batch ("loaded N") and waits for an answer.</summary>
internal static class CrashHostChild
{
    /// <summary>
    /// Runs the child; with <paramref name="killAfter"/>, kills it with SIGKILL once it reports that many committed batches
    /// (having answered the last report, so it dies somewhere after it; or, when <paramref name="answerLast"/> is false,
    /// without answering, so it dies exactly where it reported). Returns its last line, "killed", or what went wrong.
    /// </summary>
    public static async Task<string> RunAsync(IEnumerable<string> arguments, int? killAfter, bool answerLast = true)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Patterns.Etl.CrashHost.dll"));
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var errors = process.StandardError.ReadToEndAsync(timeout.Token);
        var batches = 0;
        var last = string.Empty;
        try
        {
            while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
            {
                last = line;
                if (!line.StartsWith("loaded", StringComparison.Ordinal))
                {
                    continue;
                }

                var killNow = killAfter is { } after && ++batches >= after;
                if (!killNow || answerLast)
                {
                    await process.StandardInput.WriteLineAsync("go");
                    await process.StandardInput.FlushAsync(timeout.Token);
                }

                if (killNow)
                {
                    // The child is released into its next batch (or the commit of the one it holds): kill it there.
                    process.Kill(entireProcessTree: true);
                    await process.WaitForExitAsync(timeout.Token);
                    return "killed";
                }
            }

            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            return $"timed out after '{last}'";
        }

        return process.ExitCode == 0 ? last : $"exit {process.ExitCode}: {await errors}";
    }
}
