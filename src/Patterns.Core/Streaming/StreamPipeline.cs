using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Patterns.Streaming;

/// <summary>
/// A stream with a sink, ready to run. Each <see cref="RunAsync"/> builds fresh stages, so a pipeline can be run again
/// (with its snapshot store, it resumes where the last run stopped).
/// </summary>
public sealed class StreamPipeline
{
    private readonly Func<RunContext, Driver> _build;

    internal StreamPipeline(StreamOptions options, Func<RunContext, Driver> build)
    {
        Options = options;
        _build = build;
    }

    /// <summary>Gets the pipeline's options.</summary>
    public StreamOptions Options { get; }

    /// <summary>
    /// Runs the pipeline until its input is exhausted (windows then fire and the sink is completed) or
    /// <paramref name="cancellationToken"/> is cancelled: a graceful stop, after which the pipeline stops reading,
    /// finishes what it holds, saves its window state to <see cref="StreamOptions.SnapshotStore"/> without firing
    /// open windows, and completes normally.
    /// </summary>
    /// <param name="cancellationToken">Stops the pipeline gracefully.</param>
    /// <returns>A task that completes when the pipeline has ended; it fails with the exception of a stage whose policy is <see cref="FailurePolicy.Stop"/>.</returns>
    public Task RunAsync(CancellationToken cancellationToken = default) =>
        RunHostedAsync(null, null, null, null, null, cancellationToken, CancellationToken.None);

    /// <summary>Runs with defaults from the host for what the options leave open; <paramref name="started"/> completes once the source is attached.</summary>
    internal async Task RunHostedAsync(
        string? defaultName,
        TimeProvider? defaultTime,
        ILoggerFactory? defaultLoggers,
        IStreamSnapshotStore? defaultStore,
        TaskCompletionSource? started,
        CancellationToken stop,
        CancellationToken abort)
    {
        try
        {
            await RunCoreAsync(defaultName, defaultTime, defaultLoggers, defaultStore, started, stop, abort).ConfigureAwait(false);
        }
        finally
        {
            // A pipeline that ended (or failed) before its source was attached must not hold the host's start.
            started?.TrySetResult();
        }
    }

    private async Task RunCoreAsync(
        string? defaultName,
        TimeProvider? defaultTime,
        ILoggerFactory? defaultLoggers,
        IStreamSnapshotStore? defaultStore,
        TaskCompletionSource? started,
        CancellationToken stop,
        CancellationToken abort)
    {
        var name = Options.Name ?? defaultName ?? "stream";
        var time = Options.TimeProvider ?? defaultTime ?? TimeProvider.System;
        var logger = (Options.LoggerFactory ?? defaultLoggers)?.CreateLogger("Patterns.Streaming." + name) ?? NullLogger.Instance;
        var store = Options.SnapshotStore ?? defaultStore;
        IReadOnlyDictionary<string, object>? restored = null;
        if (store is not null && await store.LoadAsync(name, abort).ConfigureAwait(false) is { } snapshot)
        {
            restored = snapshot.Operators;
            StreamingLog.Restored(logger, name, restored.Count);
        }

        using var run = new RunContext(name, Options, time, logger, restored, stop, abort, started);
        try
        {
            var driver = _build(run);

            // Every stage is built (partitions too): a snapshot that does not match the pipeline's stateful stages fails
            // the run, naming them, and stays in the store, instead of the pipeline silently starting empty.
            run.VerifyRestored();
            if (!driver.ReportsStart)
            {
                started?.TrySetResult();
            }

            await driver.RunAsync().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            run.Fail(ex);
        }

        await Task.WhenAll(run.Auxiliary).ConfigureAwait(false);
        run.ThrowIfFailed();
        abort.ThrowIfCancellationRequested();
        if (store is null)
        {
            return;
        }

        if (run.SavedState.Count > 0)
        {
            await store.SaveAsync(new StreamSnapshot(name, time.GetUtcNow(), new Dictionary<string, object>(run.SavedState, StringComparer.Ordinal)), abort).ConfigureAwait(false);
            StreamingLog.Saved(logger, name, run.SavedState.Count);
        }
        else if (!stop.IsCancellationRequested)
        {
            await store.DeleteAsync(name, abort).ConfigureAwait(false);
        }
    }
}
