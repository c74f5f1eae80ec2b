using Patterns.Storage;

namespace Patterns.EventSourcing.InMemory;

/// <summary>Units of work, the outbox and leases.</summary>
public sealed partial class InMemoryEventStorage
{
    private readonly List<StoredOutboxMessage> _outbox = [];
    private readonly Dictionary<string, LeaseRow> _leases = new(StringComparer.Ordinal);
    private long _outboxSequence;
    private TaskCompletionSource? _enqueued;

    /// <inheritdoc />
    /// <remarks>True: one lock numbers and stores a unit.</remarks>
    public bool NumbersOutboxConsecutively => true;

    /// <inheritdoc />
    public async ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        await _writer.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var appends = work.Appends;
            var results = new AppendResult[appends.Count];
            var prepared = new StoredEvent[]?[appends.Count];
            if (appends.Count > 0)
            {
                lock (_gate)
                {
                    // Versions and the head as the unit's earlier appends leave them: only needed when there are several.
                    var pending = appends.Count > 1 ? new PendingAppends(_log.Count) : null;
                    for (var i = 0; i < appends.Count; i++)
                    {
                        var a = appends[i];
                        prepared[i] = PrepareLocked(a.StreamId, a.ExpectedVersion, a.Events, pending, out var retry);
                        results[i] = retry ?? new AppendResult(a.StreamId, prepared[i]![^1].Version, prepared[i]![0].Position, prepared[i]![^1].Position);
                    }
                }
            }

            // Appends are serialized by _writer, so the versions and positions taken above stay free while inline
            // projections run; nothing is visible until the commit below. Without them the unit's document changes are
            // applied in order below (the last change to a document wins all the same), without a buffer.
            var changes = work.Documents;
            DocumentBuffer? documents = null;
            if (HasInline(appends, prepared))
            {
                documents = new DocumentBuffer(this);
                for (var i = 0; i < changes.Count; i++)
                {
                    documents.Record(changes[i]);
                }

                for (var i = 0; i < appends.Count; i++)
                {
                    if (prepared[i] is { } stored && appends[i].InlineProjection is { } inline)
                    {
                        await inline(stored, documents, cancellationToken).ConfigureAwait(false);
                    }
                }
            }

            cancellationToken.ThrowIfCancellationRequested();
            var now = _timeProvider.GetUtcNow();
            TaskCompletionSource? appended = null;
            TaskCompletionSource? enqueued = null;
            long lastSequence = 0;
            lock (_gate)
            {
                // Everything that other writers (checkpoint saves, inbox marks, lease calls) can change is checked
                // under the same lock that publishes the unit, so the checks and the writes are one step.
                // Index loops: a foreach over an IReadOnlyList boxes its enumerator.
                var fences = work.Fences;
                for (var i = 0; i < fences.Count; i++)
                {
                    CheckFenceLocked(fences[i]);
                }

                var checkpoints = work.Checkpoints;
                for (var i = 0; i < checkpoints.Count; i++)
                {
                    var change = checkpoints[i];
                    if (change.ExpectedPosition is { } expected)
                    {
                        var actual = _checkpoints.GetValueOrDefault(change.Name);
                        if (actual != expected)
                        {
                            throw new CheckpointConflictException(change.Name, expected, actual);
                        }
                    }
                }

                var claims = work.InboxClaims;
                for (var i = 0; i < claims.Count; i++)
                {
                    var claim = claims[i];
                    if (_inbox.ContainsKey((claim.Consumer, claim.MessageId)) || IndexOf(claims, claim, i) >= 0)
                    {
                        throw new DuplicateMessageException(claim.Consumer, claim.MessageId);
                    }
                }

                for (var i = 0; i < appends.Count; i++)
                {
                    if (prepared[i] is { } stored)
                    {
                        PublishLocked(appends[i].StreamId, stored);
                    }
                }

                if (documents is not null)
                {
                    documents.CommitLocked();
                }
                else
                {
                    for (var i = 0; i < changes.Count; i++)
                    {
                        var change = changes[i];
                        if (change.IsDelete)
                        {
                            DeleteLocked(change.Collection, change.Id);
                        }
                        else
                        {
                            UpsertLocked(change.Collection, change.Id, change.Document.ToArray());
                        }
                    }
                }

                for (var i = 0; i < checkpoints.Count; i++)
                {
                    _checkpoints[checkpoints[i].Name] = checkpoints[i].Position;
                }

                for (var i = 0; i < claims.Count; i++)
                {
                    _inbox.Add((claims[i].Consumer, claims[i].MessageId), now);
                }

                var outbox = work.Outbox;
                for (var i = 0; i < outbox.Count; i++)
                {
                    var message = outbox[i];
                    lastSequence = ++_outboxSequence;
                    _outbox.Add(new StoredOutboxMessage(lastSequence, message with { Payload = message.Payload.ToArray() }, now));
                }

                if (Array.Exists(prepared, static p => p is not null))
                {
                    appended = _appended;
                    _appended = null;
                }

                if (lastSequence > 0)
                {
                    enqueued = _enqueued;
                    _enqueued = null;
                }
            }

            appended?.TrySetResult();
            enqueued?.TrySetResult();
            return results.Length == 0 && lastSequence == 0 ? UnitOfWorkResult.Empty : new UnitOfWorkResult(results, lastSequence);
        }
        finally
        {
            _writer.Release();
        }
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<StoredOutboxMessage>> ReadOutboxAsync(long afterSequence, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        lock (_gate)
        {
            // Sequence numbers increase along the list, so the first message after afterSequence is found by a binary search.
            var start = _outbox.BinarySearch(new StoredOutboxMessage(afterSequence, null!, default), SequenceComparer.Instance);
            start = start >= 0 ? start + 1 : ~start;
            var count = Math.Min(maxCount, _outbox.Count - start);
            return new ValueTask<IReadOnlyList<StoredOutboxMessage>>(count <= 0 ? [] : _outbox.GetRange(start, count));
        }
    }

    /// <inheritdoc />
    public ValueTask<long> DeleteOutboxAsync(long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            if (fence is not null)
            {
                CheckFenceLocked(fence);
            }

            var end = _outbox.BinarySearch(new StoredOutboxMessage(throughSequence, null!, default), SequenceComparer.Instance);
            end = end >= 0 ? end + 1 : ~end;
            _outbox.RemoveRange(0, end);
            return new ValueTask<long>(end);
        }
    }

    /// <inheritdoc />
    public ValueTask WaitForOutboxAsync(long afterSequence, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        Task wait;
        lock (_gate)
        {
            if (_outbox.Count > 0 && _outbox[^1].Sequence > afterSequence)
            {
                return default;
            }

            wait = (_enqueued ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }

        return new ValueTask(wait.WaitAsync(cancellationToken));
    }

    /// <inheritdoc />
    public ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        ValidateLease(name, owner, duration);
        var now = _timeProvider.GetUtcNow();
        lock (_gate)
        {
            _leases.TryGetValue(name, out var row);
            if (row is { Owner: { } holder } && holder != owner && row.ExpiresAt > now)
            {
                return new ValueTask<Lease?>((Lease?)null);
            }

            var token = row is { Owner: { } same } && same == owner ? row.Token : (row?.Token ?? 0) + 1;
            var lease = new Lease(name, owner, token, now + duration);
            _leases[name] = new LeaseRow(owner, token, lease.ExpiresAt);
            return new ValueTask<Lease?>(lease);
        }
    }

    /// <inheritdoc />
    public ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        ValidateLease(lease.Name, lease.Owner, duration);
        var now = _timeProvider.GetUtcNow();
        lock (_gate)
        {
            if (!_leases.TryGetValue(lease.Name, out var row) || row.Owner != lease.Owner || row.Token != lease.Token)
            {
                return new ValueTask<Lease?>((Lease?)null);
            }

            var renewed = lease with { ExpiresAt = now + duration };
            _leases[lease.Name] = row with { ExpiresAt = renewed.ExpiresAt };
            return new ValueTask<Lease?>(renewed);
        }
    }

    /// <inheritdoc />
    public ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        lock (_gate)
        {
            if (_leases.TryGetValue(lease.Name, out var row) && row.Owner == lease.Owner && row.Token == lease.Token)
            {
                // The token stays, so whoever takes the lease next gets a greater one.
                _leases[lease.Name] = new LeaseRow(null, row.Token, DateTimeOffset.MinValue);
            }
        }

        return default;
    }

    private static void ValidateLease(string name, string owner, TimeSpan duration)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentException.ThrowIfNullOrEmpty(owner);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(duration, TimeSpan.Zero);
    }

    private static bool HasInline(IReadOnlyList<UnitOfWorkAppend> appends, StoredEvent[]?[] prepared)
    {
        for (var i = 0; i < appends.Count; i++)
        {
            if (prepared[i] is not null && appends[i].InlineProjection is not null)
            {
                return true;
            }
        }

        return false;
    }

    private static int IndexOf(IReadOnlyList<InboxClaim> claims, InboxClaim claim, int before)
    {
        for (var j = 0; j < before; j++)
        {
            if (claims[j] == claim)
            {
                return j;
            }
        }

        return -1;
    }

    private void CheckFenceLocked(Lease fence)
    {
        if (!_leases.TryGetValue(fence.Name, out var row) || row.Owner != fence.Owner || row.Token != fence.Token)
        {
            throw new LeaseLostException(fence, row?.Owner);
        }
    }

    /// <summary>Versions and the head as a unit of work's earlier appends leave them.</summary>
    private sealed class PendingAppends(long head)
    {
        public Dictionary<string, long> Versions { get; } = new(StringComparer.Ordinal);

        public long Head { get; set; } = head;
    }

    private sealed record LeaseRow(string? Owner, long Token, DateTimeOffset ExpiresAt);

    private sealed class SequenceComparer : IComparer<StoredOutboxMessage>
    {
        public static readonly SequenceComparer Instance = new();

        public int Compare(StoredOutboxMessage? x, StoredOutboxMessage? y) => x!.Sequence.CompareTo(y!.Sequence);
    }
}
