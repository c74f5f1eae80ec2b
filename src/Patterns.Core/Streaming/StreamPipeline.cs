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
        RunHostedAsync(null, null, null, null, null, null, cancellationToken, CancellationToken.None);

    /// <summary>Runs with defaults from the host for what the options leave open; <paramref name="started"/> completes once the source is attached.</summary>
    internal async Task RunHostedAsync(
        string? defaultName,
        TimeProvider? defaultTime,
        ILoggerFactory? defaultLoggers,
        IStreamSnapshotStore? defaultStore,
        TaskCompletionSource? started,
        Storage.Lease? lease,
        CancellationToken stop,
        CancellationToken abort)
    {
        try
        {
            while (true)
            {
                try
                {
                    await RunCoreAsync(defaultName, defaultTime, defaultLoggers, defaultStore, started, lease, stop, abort).ConfigureAwait(false);
                    return;
                }
                catch (Storage.DuplicateMessageException ex) when (IsOwnInboxDuplicate(ex, out _) && !abort.IsCancellationRequested)
                {
                    // A copy of a message that a committed snapshot includes was taken again: it was sent again with a
                    // first delivery's count, so the source could not tell it from a new message without reading the
                    // inbox for every message. The snapshot that would have counted it twice failed on its inbox
                    // claim; the run released what it held, and starts again from the last committed snapshot, as
                    // after a crash (the copy comes back marked as released, which the source checks against the inbox). A stop ends here.
                    if (stop.IsCancellationRequested)
                    {
                        return;
                    }
                }
            }
        }
        finally
        {
            // A pipeline that ended (or failed) before its source was attached must not hold the host's start.
            started?.TrySetResult();
        }
    }

    /// <summary>The prefix of the inbox consumer under which a pipeline records the messages its committed snapshots include.</summary>
    internal const string InboxPrefix = "stream:";

    /// <summary>Gets whether <paramref name="exception"/> is a snapshot's inbox claim refused because a committed snapshot includes the message.</summary>
    internal static bool IsOwnInboxDuplicate(Exception exception, out string messageId)
    {
        if (exception is Storage.DuplicateMessageException duplicate && duplicate.Consumer.StartsWith(InboxPrefix, StringComparison.Ordinal))
        {
            messageId = duplicate.MessageId;
            return true;
        }

        messageId = string.Empty;
        return false;
    }

    private async Task RunCoreAsync(
        string? defaultName,
        TimeProvider? defaultTime,
        ILoggerFactory? defaultLoggers,
        IStreamSnapshotStore? defaultStore,
        TaskCompletionSource? started,
        Storage.Lease? lease,
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

        using var run = new RunContext(name, Options, time, logger, restored, stop, abort, started) { Store = store, Lease = lease };
        ITimer? snapshots = null;
        try
        {
            var driver = _build(run);

            // Every stage is built (partitions too): a snapshot that does not match the pipeline's stateful stages fails
            // the run, naming them, and stays in the store, instead of the pipeline silently starting empty.
            run.VerifyRestored();
            if (store is not null)
            {
                run.Committer = endOfRun => CommitAsync(run, store, endOfRun);
                if (run.HoldsAcknowledgements)
                {
                    // A transport source that reaches its bound of unacknowledged messages asks for a snapshot, which
                    // an idle driver must wake up for.
                    driver.UseTimers();
                }

                if (Options.SnapshotInterval is { } interval)
                {
                    driver.UseTimers();
                    snapshots = time.CreateTimer(static d => ((Driver)d!).RequestCheckpoint(), driver, interval, interval);
                }
            }

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
        finally
        {
            snapshots?.Dispose();
        }

        await Task.WhenAll(run.Auxiliary).ConfigureAwait(false);
        run.ThrowIfFailed();
        abort.ThrowIfCancellationRequested();
        await run.CommitEndAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Commits the saved state, with the writes of a transactional sink, in one unit of work when the store has them: at
    /// the end of the run (a snapshot on a graceful stop, a delete when the input is exhausted) or periodically.
    /// </summary>
    private static async ValueTask CommitAsync(RunContext run, IStreamSnapshotStore store, bool endOfRun)
    {
        var writes = run.TakePendingWrites();
        var saved = new Dictionary<string, object>(run.SavedState, StringComparer.Ordinal);
        var snapshot = saved.Count > 0 ? new StreamSnapshot(run.Name, run.Time.GetUtcNow(), saved) : null;
        var delete = snapshot is null && endOfRun && !run.StopToken.IsCancellationRequested;
        if (store is StoreStreamSnapshotStore durable)
        {
            var unit = new Storage.UnitOfWork();
            if (snapshot is not null)
            {
                durable.Write(unit, snapshot);
            }
            else if (delete)
            {
                unit.Delete(StoreStreamSnapshotStore.Collection, run.Name);
            }

            foreach (var write in writes)
            {
                write(unit);
            }

            if (!unit.IsEmpty)
            {
                if (run.Lease is { } lease)
                {
                    // A process that lost the pipeline's lease cannot commit over the new owner's state.
                    unit.RequireLease(lease);
                }

                await StoreAsync(run, async () => await durable.Units.CommitAsync(unit, run.AbortToken).ConfigureAwait(false)).ConfigureAwait(false);
            }
        }
        else if (snapshot is not null)
        {
            await StoreAsync(run, () => store.SaveAsync(snapshot, run.AbortToken)).ConfigureAwait(false);
        }
        else if (delete)
        {
            await StoreAsync(run, () => store.DeleteAsync(run.Name, run.AbortToken)).ConfigureAwait(false);
        }

        if (snapshot is not null && endOfRun)
        {
            StreamingLog.Saved(run.Logger, run.Name, saved.Count);
        }
    }

    /// <summary>
    /// Runs the store's part of a commit: a failure there (the store, or an inbox claim of a copy committed already) is
    /// the stream's, not its messages', which go back uncounted; building the snapshot stays outside, a failure there counts.
    /// </summary>
    private static async ValueTask StoreAsync(RunContext run, Func<ValueTask> io)
    {
        try
        {
            await io().ConfigureAwait(false);
        }
        catch
        {
            run.CommitFailed = true;
            throw;
        }
    }
}
