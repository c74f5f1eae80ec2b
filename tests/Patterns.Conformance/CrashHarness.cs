using System.Diagnostics;
using System.Globalization;
using Patterns.Storage;

namespace Patterns.Conformance;

/// <summary>One acknowledged append reported by a writer process before it was killed.</summary>
/// <param name="StreamId">The stream appended to.</param>
/// <param name="Version">The stream version the append returned.</param>
/// <param name="EventIds">The appended event ids, in order; the last one has <paramref name="Version"/>.</param>
public sealed record AcknowledgedAppend(string StreamId, long Version, IReadOnlyList<Guid> EventIds);

/// <summary>What a killed writer process acknowledged before it died.</summary>
/// <param name="Acknowledged">Every append whose call returned before the kill.</param>
public sealed record CrashRun(IReadOnlyList<AcknowledgedAppend> Acknowledged);

/// <summary>
/// Crash-safety harness for durable stores. The child process calls <see cref="RunWriterAsync"/> on its store
/// and prints one line per acknowledged append; the test process starts it with
/// <see cref="RunAndKillAsync"/>, which kills it once enough appends are acknowledged and returns them. The
/// suite then reopens the store and checks that every acknowledged event is there.
/// </summary>
public static class CrashHarness
{
    private const string AckPrefix = "ack ";

    /// <summary>
    /// Appends to <paramref name="writers"/> streams concurrently until the process is killed, writing
    /// <c>ack &lt;stream&gt; &lt;version&gt; &lt;count&gt; &lt;id,id,...&gt;</c> to <paramref name="output"/> after each append returns.
    /// Run this in the child process.
    /// </summary>
    /// <param name="storage">The durable store.</param>
    /// <param name="output">Where acknowledgements go (the process's standard output); flushed after every line.</param>
    /// <param name="writers">How many streams are appended to at once.</param>
    /// <param name="cancellationToken">Stops the writers (normally the process is killed first).</param>
    /// <returns>A task that completes when <paramref name="cancellationToken"/> is cancelled.</returns>
    public static Task RunWriterAsync(IEventStorage storage, TextWriter output, int writers = 4, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(storage);
        return RunAppenderAsync((streamId, expected, events, ct) => storage.AppendAsync(streamId, expected, events, null, ct), output, writers, cancellationToken);
    }

    /// <summary>
    /// <see cref="RunWriterAsync"/> with the append supplied by the caller, for a store that is to be crash-tested through
    /// another write path (a unit of work that appends and writes more besides).
    /// </summary>
    /// <param name="append">Appends events to a stream at an exact expected version and returns the append's result.</param>
    /// <param name="output">Where acknowledgements go (the process's standard output); flushed after every line.</param>
    /// <param name="writers">How many streams are appended to at once.</param>
    /// <param name="cancellationToken">Stops the writers (normally the process is killed first).</param>
    /// <returns>A task that completes when <paramref name="cancellationToken"/> is cancelled.</returns>
    public static async Task RunAppenderAsync(
        Func<string, ExpectedVersion, IReadOnlyList<SerializedEvent>, CancellationToken, ValueTask<AppendResult>> append,
        TextWriter output,
        int writers = 4,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(append);
        ArgumentNullException.ThrowIfNull(output);
        var gate = new Lock();
        var tasks = Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            var streamId = $"crash-{w}";
            long version = 0;
            var payload = new byte[512];
            for (var i = 0; !cancellationToken.IsCancellationRequested; i++)
            {
                var batch = new SerializedEvent[1 + (i % 3)];
                for (var j = 0; j < batch.Length; j++)
                {
                    batch[j] = new SerializedEvent(Guid.NewGuid(), "crash.tick", payload, DateTimeOffset.UnixEpoch);
                }

                var result = await append(streamId, ExpectedVersion.Exact(version), batch, cancellationToken);
                version = result.Version;
                var line = string.Create(CultureInfo.InvariantCulture, $"{AckPrefix}{streamId} {version} {batch.Length} {string.Join(',', batch.Select(e => e.EventId))}");
                lock (gate)
                {
                    output.WriteLine(line);
                    output.Flush();
                }
            }
        }, CancellationToken.None)).ToArray();
        try
        {
            await Task.WhenAll(tasks);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>
    /// Starts a writer process, kills it (with its process tree) as soon as it has acknowledged
    /// <paramref name="killAfterAcks"/> appends, and returns every acknowledgement it printed, including those
    /// still in the pipe when it died.
    /// </summary>
    /// <param name="startInfo">Starts the child; standard output is redirected by this method.</param>
    /// <param name="killAfterAcks">How many acknowledgements to wait for before the kill.</param>
    /// <param name="cancellationToken">Bounds the wait; the child is killed when it fires.</param>
    /// <returns>The acknowledged appends.</returns>
    /// <exception cref="InvalidOperationException">The child exited on its own before the kill, or printed an error.</exception>
    public static async Task<CrashRun> RunAndKillAsync(ProcessStartInfo startInfo, int killAfterAcks, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(startInfo);
        startInfo.RedirectStandardOutput = true;
        startInfo.RedirectStandardError = true;
        startInfo.UseShellExecute = false;
        using var process = Process.Start(startInfo) ?? throw new InvalidOperationException($"Could not start '{startInfo.FileName}'.");
        var errors = process.StandardError.ReadToEndAsync(CancellationToken.None);
        var acknowledged = new List<AcknowledgedAppend>();
        var killed = false;
        try
        {
            while (await process.StandardOutput.ReadLineAsync(cancellationToken) is { } line)
            {
                // A line cut short by the kill is not counted: the append may still have been acknowledged,
                // so this only ever checks less, never more.
                if (TryParse(line) is { } ack)
                {
                    acknowledged.Add(ack);
                }

                if (!killed && acknowledged.Count >= killAfterAcks)
                {
                    process.Kill(entireProcessTree: true);
                    killed = true;
                }
            }
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        await process.WaitForExitAsync(cancellationToken);
        if (!killed)
        {
            throw new InvalidOperationException(
                $"The writer process exited with code {process.ExitCode} after {acknowledged.Count} acknowledgements, before it was killed. Its error output: {await errors}");
        }

        return new CrashRun(acknowledged);
    }

    private static AcknowledgedAppend? TryParse(string line)
    {
        if (!line.StartsWith(AckPrefix, StringComparison.Ordinal))
        {
            return null;
        }

        var parts = line[AckPrefix.Length..].Split(' ');
        if (parts.Length != 4
            || !long.TryParse(parts[1], CultureInfo.InvariantCulture, out var version)
            || !int.TryParse(parts[2], CultureInfo.InvariantCulture, out var count))
        {
            return null;
        }

        var ids = new List<Guid>();
        foreach (var text in parts[3].Split(','))
        {
            if (text.Length != 36 || !Guid.TryParse(text, CultureInfo.InvariantCulture, out var id))
            {
                return null;
            }

            ids.Add(id);
        }

        return ids.Count == 0 || ids.Count != count ? null : new AcknowledgedAppend(parts[0], version, ids);
    }
}
