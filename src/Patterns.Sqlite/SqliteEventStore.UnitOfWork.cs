using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>Units of work, the outbox and leases.</summary>
public sealed partial class SqliteEventStore
{
    private TaskCompletionSource _enqueued = NewSignal();

    /// <inheritdoc />
    /// <remarks>True: one writer numbers and commits units in turn.</remarks>
    public bool NumbersOutboxConsecutively => true;

    /// <inheritdoc />
    /// <remarks>
    /// The unit is one write of the store's writer: it runs in the writer's transaction under its own savepoint, so units
    /// queued together share one commit (and one WAL sync) while each keeps its own outcome. The task completes after
    /// the commit, so a committed unit survives the process being killed.
    /// </remarks>
    public ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        foreach (var append in work.Appends)
        {
            SqliteArguments.Append(append.StreamId, append.Events);
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<UnitOfWorkResult>(cancellationToken);
        }

        if (work.IsEmpty && work.Fences.Count == 0)
        {
            return new(UnitOfWorkResult.Empty);
        }

        return Writer().EnqueueAsync(new UnitOfWorkOperation(work, SignalOutbox, cancellationToken));
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<StoredOutboxMessage>> ReadOutboxAsync(long afterSequence, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        cancellationToken.ThrowIfCancellationRequested();
        return new(Read((afterSequence, maxCount, _sql), static (session, s) =>
        {
            var command = session.Command(s._sql.ReadOutbox, "@after", "@limit");
            command.Parameters[0].Value = s.afterSequence;
            command.Parameters[1].Value = s.maxCount;
            using var reader = command.ExecuteReader();
            var messages = new List<StoredOutboxMessage>();
            while (reader.Read())
            {
                var message = new OutboxMessage(reader.GetString(1), (OutboxMessageKind)reader.GetInt32(2), (byte[])reader.GetValue(4))
                {
                    PartitionKey = reader.IsDBNull(3) ? null : reader.GetString(3),
                };
                messages.Add(new StoredOutboxMessage(reader.GetInt64(0), message, new DateTimeOffset(reader.GetInt64(5), TimeSpan.Zero)));
            }

            return (IReadOnlyList<StoredOutboxMessage>)messages;
        }));
    }

    /// <inheritdoc />
    /// <remarks>The fence is checked in the transaction that deletes, so a relay that lost its lease removes nothing.</remarks>
    public ValueTask<long> DeleteOutboxAsync(long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default) =>
        Writer().EnqueueAsync(new DelegateWrite<(long, Lease?), long>((throughSequence, fence), static (w, s) => w.DeleteOutbox(s.Item1, s.Item2), cancellationToken));

    /// <inheritdoc />
    /// <remarks>
    /// Units committed by this store instance wake waiters at once; other processes' commits within
    /// <see cref="SqliteEventStoreOptions.ChangeCheckInterval"/>, or at <see cref="SqliteEventStoreOptions.PollInterval"/>
    /// when the checks are off.
    /// </remarks>
    public async ValueTask WaitForOutboxAsync(long afterSequence, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        _watch?.EnsureStarted();
        var signal = Volatile.Read(ref _enqueued); // before the read, so that a commit after the read still wakes this wait
        if (_disposed != 0 || Read(_sql, static (session, sql) => (long)session.Command(sql.SelectOutboxHead).ExecuteScalar()!) > afterSequence)
        {
            return;
        }

        await SignalOrPollAsync(signal, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    /// <remarks>Expiry is read from <see cref="SqliteEventStoreOptions.TimeProvider"/> inside the write transaction.</remarks>
    public ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        SqliteArguments.Lease(name, owner, duration);
        return Writer().EnqueueAsync(new DelegateWrite<(string, string, TimeSpan), Lease?>(
            (name, owner, duration), static (w, s) => w.TryAcquireLease(s.Item1, s.Item2, s.Item3), cancellationToken));
    }

    /// <inheritdoc />
    public ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        SqliteArguments.Lease(lease.Name, lease.Owner, duration);
        return Writer().EnqueueAsync(new DelegateWrite<(Lease, TimeSpan), Lease?>((lease, duration), static (w, s) => w.RenewLease(s.Item1, s.Item2), cancellationToken));
    }

    /// <inheritdoc />
    public ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        return Discard(Writer().EnqueueAsync(new DelegateWrite<Lease, bool>(lease, static (w, l) => w.ReleaseLease(l), cancellationToken)));
    }

    private void SignalOutbox() => Interlocked.Exchange(ref _enqueued, NewSignal()).TrySetResult();
}
