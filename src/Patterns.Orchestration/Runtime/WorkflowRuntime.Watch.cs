using System.Buffers.Text;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Patterns.Orchestration.History;
using Patterns.Storage;

namespace Patterns.Orchestration.Runtime;

/// <summary>
/// Wake-ups pushed through the store between processes that share it: a request handed to another process appends a
/// marker event with its mailbox entry (one unit of work), and every workflow task that ends a run or an update appends its
/// event anyway. One loop per process waits on the store's append signal (in-process at once; PostgreSQL LISTEN/NOTIFY
/// from other processes; SQLite's poll interval from other processes), reads the global log for those event types only,
/// drains the mailbox of a partition it owns, and completes the local waiters of instances that run elsewhere. The reads
/// every <see cref="OrchestrationOptions.HandoffInterval"/> stay only as the fallback for a lost notification.
/// </summary>
internal sealed partial class WorkflowRuntime
{
    internal const string HandoffEventType = "wf.Handoff";

    private static readonly EventFilter MailboxOnly = new() { EventTypes = [HandoffEventType] };

    private static readonly EventFilter MailboxAndEnds = new()
    {
        EventTypes = [HandoffEventType, "wf." + HistoryEventKind.Completed, "wf." + HistoryEventKind.Failed, "wf." + HistoryEventKind.Canceled, "wf." + HistoryEventKind.Terminated, "wf." + HistoryEventKind.UpdateCompleted],
    };

    private readonly Lock _ownLock = new();
    private readonly List<(long First, long Last)> _own = [];
    private Task? _watch;
    private long _watchedTo;
    private int _waitEpoch;

    /// <summary>Raised after the watch loop has read the global log up to a position (tests wait on it instead of sleeping).</summary>
    public event Action<long>? Watched;

    /// <summary>Gets the position of the global log the watch loop has read up to.</summary>
    public long WatchedTo => Interlocked.Read(ref _watchedTo);

    /// <summary>The stream of the marker events that announce the requests handed to <paramref name="partition"/>'s mailbox.</summary>
    private string MailboxStream(int partition) => $"{HandedOffItem.CollectionPrefix}{Options.StreamPrefix}{partition}";

    /// <summary>Adds a request to a partition's mailbox and its marker event (which wakes the owner) to <paramref name="work"/>.</summary>
    private UnitOfWork AddToMailbox(UnitOfWork work, int partition, string key, byte[] request) => work
        .Upsert(HandedOffItem.CollectionPrefix + partition, key, request)
        .Append(MailboxStream(partition), ExpectedVersion.Any, [new SerializedEvent(Guid.NewGuid(), HandoffEventType, Encoding.UTF8.GetBytes(partition.ToString(CultureInfo.InvariantCulture)), _time.GetUtcNow())]);

    /// <summary>Starts the watch loop from the current head of the global log (before any partition is taken, so no request is missed).</summary>
    private async Task StartWatchAsync(CancellationToken cancellationToken)
    {
        var head = await _storage.GetHeadPositionAsync(cancellationToken).ConfigureAwait(false);
        Interlocked.Exchange(ref _watchedTo, head);
        _watch = WatchAsync(head);
    }

    private async Task WatchAsync(long after)
    {
        var stopping = _stopping.Token;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await _storage.WaitForEventsAsync(after, stopping).ConfigureAwait(false);

                // Everything up to the head is committed and readable: the read below sees it all, so the loop moves past
                // it even when none of it is a marker or an end (and the wait above then waits for later commits).
                var head = await _storage.GetHeadPositionAsync(stopping).ConfigureAwait(false);
                if (OnlyOwn(after, head))
                {
                    // Only this process's own workflow tasks committed since: it applied them and woke their waiters itself.
                    after = head;
                    Interlocked.Exchange(ref _watchedTo, after);
                    Watched?.Invoke(after);
                    continue;
                }

                var from = after;
                var epoch = Volatile.Read(ref _waitEpoch);
                var ends = !_closeWaiters.IsEmpty || !_updateWaiters.IsEmpty;
                HashSet<int>? partitions = null;
                await foreach (var stored in _storage.ReadAllAsync(from, ends ? MailboxAndEnds : MailboxOnly, cancellationToken: stopping).ConfigureAwait(false))
                {
                    after = Math.Max(after, stored.Position);
                    if (stored.EventType == HandoffEventType)
                    {
                        if (Utf8Parser.TryParse(stored.Data.Span, out int partition, out _) && partition >= 0 && partition < Options.Partitions)
                        {
                            (partitions ??= []).Add(partition);
                        }
                    }
                    else
                    {
                        await OnEndAsync(stored).ConfigureAwait(false);
                    }
                }

                after = Math.Max(after, head);
                if (!ends && Volatile.Read(ref _waitEpoch) != epoch)
                {
                    // A client began to wait while this read skipped the ends: read the same stretch again for them (the
                    // waiter registered before it read the instance's state, so an end committed after this read reaches it).
                    after = from;
                }

                foreach (var partition in partitions ?? [])
                {
                    if (_leases is not null && Volatile.Read(ref _leases[partition]) is not null)
                    {
                        await DrainAsync(partition, stopping).ConfigureAwait(false);
                    }
                }

                Interlocked.Exchange(ref _watchedTo, after);
                Watched?.Invoke(after);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // The fallback reads every HandoffInterval go on meanwhile.
                OrchestrationLog.WatchFailed(_logger, ex);
                try
                {
                    await Task.Delay(Options.HandoffInterval, _time, stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    /// <summary>A run or an update ended (here or in another process): completes the waiters this process has for it.</summary>
    private async ValueTask OnEndAsync(StoredEvent stored)
    {
        if (!stored.StreamId.StartsWith(Options.StreamPrefix, StringComparison.Ordinal))
        {
            return; // another engine's streams in the same store
        }

        if (stored.EventType == "wf." + HistoryEventKind.UpdateCompleted)
        {
            if (!_updateWaiters.IsEmpty && Decode(stored) is { Id: { } updateId } completed && _updateWaiters.TryRemove(updateId, out var waiter))
            {
                waiter.TrySetResult(completed);
            }

            return;
        }

        // The stream of run 1 is the prefix and the id; later runs add "~" and the run number.
        var rest = stored.StreamId[Options.StreamPrefix.Length..];
        var tilde = rest.LastIndexOf('~');
        var instanceId = _closeWaiters.ContainsKey(rest) || tilde < 0 || !int.TryParse(rest.AsSpan(tilde + 1), NumberStyles.None, CultureInfo.InvariantCulture, out _)
            ? rest
            : rest[..tilde];
        if (_closeWaiters.ContainsKey(instanceId) && await ReadRecordAsync(instanceId).ConfigureAwait(false) is { } record
            && (record.ClosedAt is not null || record.Status == WorkflowStatus.Faulted))
        {
            NotifyClosed(record);
        }
    }

    /// <summary>Records the positions a group of this process's workflow tasks took, which the watch loop then need not read.</summary>
    private void OwnCommitted(UnitOfWorkResult result)
    {
        if (_watch is null)
        {
            return;
        }

        lock (_ownLock)
        {
            foreach (var append in result.Appends)
            {
                if (append.FirstPosition > 0 && append.LastPosition >= append.FirstPosition)
                {
                    _own.Add((append.FirstPosition, append.LastPosition));
                }
            }
        }
    }

    /// <summary>
    /// Whether every position after <paramref name="after"/> up to <paramref name="head"/> is one this process's workflow
    /// tasks committed (reading them back cost a busy single process a read per group commit); forgets those up to the head.
    /// </summary>
    private bool OnlyOwn(long after, long head)
    {
        lock (_ownLock)
        {
            _own.Sort();
            var next = after + 1;
            foreach (var (first, last) in _own)
            {
                if (last < next)
                {
                    continue;
                }

                if (first > next)
                {
                    break;
                }

                next = last + 1;
            }

            _own.RemoveAll(r => r.Last <= head);
            return next > head;
        }
    }

    /// <summary>Records that a client registered a waiter for an end or an update (the watch loop then reads the ends too).</summary>
    private void WaiterRegistered() => Interlocked.Increment(ref _waitEpoch);

    private async Task StopWatchAsync()
    {
        if (_watch is not null)
        {
            await _watch.ConfigureAwait(false);
        }
    }

    /// <summary>Encodes a request for a mailbox.</summary>
    private static byte[] EncodeHandedOff(HandedOffItem item) => JsonSerializer.SerializeToUtf8Bytes(item, OrchestrationJson.Default.HandedOffItem);
}
