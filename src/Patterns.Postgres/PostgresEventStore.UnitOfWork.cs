using System.Globalization;
using Npgsql;
using NpgsqlTypes;
using Patterns.Storage;

namespace Patterns.Postgres;

/// <summary>
/// Units of work, the outbox and leases. A unit is one transaction; units that arrive while another unit commits
/// queue up and commit together in one transaction (group commit), each under a savepoint of its own so a failing
/// unit rolls back alone.
/// </summary>
public sealed partial class PostgresEventStore
{
    // How many times in all a transaction that loses a deadlock is run (see RetryDeadlockAsync).
    private const int MaxDeadlockAttempts = 3;

    /// <summary>How many units that each need a savepoint one group transaction takes (below PostgreSQL's cache of 64 subtransactions).</summary>
    internal const int MaxSavepointsPerTransaction = 32;

    // The savepoints a unit's appends start with: one per append, or one for all of them appended in one statement.
    private const string AppendSavepoint = "append";
    private const string AppendsSavepoint = "appends";

    private readonly GroupQueue<PendingUnit, UnitOfWorkResult> _unitQueue;
    private long _unitTransactions;
    private long _unitGroups;

    /// <summary>Gets how many transactions committed units of work (for tests).</summary>
    internal long UnitTransactions => Interlocked.Read(ref _unitTransactions);

    /// <summary>Gets how many transactions committed two or more units of work together (for tests).</summary>
    internal long UnitGroups => Interlocked.Read(ref _unitGroups);

    /// <summary>Gets how many units of work wait for the next group (for tests).</summary>
    internal int QueuedUnits => _unitQueue.Count;

    /// <inheritdoc />
    /// <remarks>True: units number their outbox messages under one lock held to their commit.</remarks>
    public bool NumbersOutboxConsecutively => true;

    /// <inheritdoc />
    /// <remarks>
    /// <para>
    /// The unit's parts run in one transaction, in this order: lease fences (each lease row is share-locked, so no
    /// take-over commits before the unit does), checkpoints (an expected position is a compare-and-set), inbox claims
    /// (inserted into the inbox table; an existing entry, or one a concurrent transaction commits first, fails the
    /// unit), document changes, appends (with inline projections, as <see cref="AppendAsync"/> runs them), then outbox
    /// messages under the position lock, so sequence numbers become visible in increasing order.
    /// </para>
    /// <para>
    /// Units that arrive while another unit commits are committed together in the next transaction, each under its own
    /// savepoint: a unit that fails rolls back to its savepoint and throws its own exception, and the others commit.
    /// </para>
    /// </remarks>
    public ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        ValidateUnit(work);
        if (work.IsEmpty && work.Fences.Count == 0)
        {
            return cancellationToken.IsCancellationRequested ? ValueTask.FromCanceled<UnitOfWorkResult>(cancellationToken) : new(UnitOfWorkResult.Empty);
        }

        return _unitQueue.RunAsync(new PendingUnit(work), ct => CommitAloneAsync(work, ct), cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<StoredOutboxMessage>> ReadOutboxAsync(long afterSequence, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        var messages = new List<StoredOutboxMessage>();
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = Command(connection, null, _schema.ReadOutbox, Parameters.Bigint(afterSequence), Parameters.Integer(maxCount));
            await using (command.ConfigureAwait(false))
            {
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        messages.Add(ReadOutboxMessage(reader));
                    }
                }
            }
        }

        return messages;
    }

    /// <inheritdoc />
    /// <remarks>
    /// With <paramref name="fence"/>, the lease check (a share lock on its row) and the delete are one statement. The
    /// delete commits without waiting for its WAL flush (<c>synchronous_commit</c> off for its transaction only): a
    /// removal that a server crash undoes only sends its messages again, which the relay's at-least-once delivery allows,
    /// and the removals do not take a disk flush of their own between the flushes of the commits that enqueue.
    /// </remarks>
    public ValueTask<long> DeleteOutboxAsync(long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default) =>
        DeleteOutboxRangeAsync(0, throughSequence, fence, cancellationToken);

    /// <inheritdoc />
    /// <remarks>
    /// Only rows above <paramref name="afterSequence"/> are looked at: a removed row stays in the primary key's index
    /// until vacuum, so a removal from the start walked every row removed since the last vacuum, and the relay's
    /// removals grew slower with every message it had sent. The lease check and the commit are as in
    /// <see cref="DeleteOutboxAsync(long, Lease?, CancellationToken)"/>.
    /// </remarks>
    public async ValueTask<long> DeleteOutboxRangeAsync(long afterSequence, long throughSequence, Lease? fence = null, CancellationToken cancellationToken = default)
    {
        if (fence is null)
        {
            return (long)(await ScalarAsync(_schema.DeleteOutbox, cancellationToken, Parameters.Bigint(throughSequence), Parameters.Bigint(afterSequence)).ConfigureAwait(false))!;
        }

        Guard.Text(fence.Name, nameof(fence));
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = Command(
                connection,
                null,
                _schema.DeleteOutboxFenced,
                Parameters.Bigint(throughSequence),
                Parameters.Text(fence.Name),
                Parameters.Text(fence.Owner),
                Parameters.Bigint(fence.Token),
                Parameters.Bigint(afterSequence));
            await using (command.ConfigureAwait(false))
            {
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                    var (owner, token) = ReadLeaseHolder(reader);
                    if (owner != fence.Owner || token != fence.Token)
                    {
                        throw new LeaseLostException(fence, owner);
                    }

                    return reader.GetInt64(2);
                }
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Units committed by this store instance wake waiters at once; units committed by other processes wake them
    /// through LISTEN/NOTIFY on the schema's outbox channel. Otherwise, or while the listening connection is down, the
    /// wait ends after <see cref="PostgresEventStoreOptions.PollInterval"/>.
    /// </remarks>
    public ValueTask WaitForOutboxAsync(long afterSequence, CancellationToken cancellationToken) =>
        WaitForSignalAsync(_listener.Outbox, afterSequence, _schema.OutboxHead, cancellationToken);

    /// <inheritdoc />
    /// <remarks>
    /// One statement (<c>INSERT ... ON CONFLICT DO UPDATE ... WHERE</c>), so two processes racing for a free or expired
    /// lease cannot both get it. Expiry is compared with the store's <see cref="TimeProvider"/>, not the database clock.
    /// </remarks>
    public async ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        ValidateLease(name, owner, duration);
        var now = _timeProvider.GetUtcNow();
        var expiresAt = now + duration;
        var token = await ScalarAsync(
            _schema.LeaseAcquire, cancellationToken, Parameters.Text(name), Parameters.Text(owner), Parameters.Timestamp(now), Parameters.Timestamp(expiresAt)).ConfigureAwait(false);
        return token is long held ? new Lease(name, owner, held, expiresAt) : null;
    }

    /// <inheritdoc />
    public async ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        ValidateLease(lease.Name, lease.Owner, duration);
        var renewed = lease with { ExpiresAt = _timeProvider.GetUtcNow() + duration };
        return await ChangeLeaseAsync(_schema.LeaseRenew, lease, renewed.ExpiresAt, cancellationToken).ConfigureAwait(false) ? renewed : null;
    }

    /// <inheritdoc />
    /// <remarks>
    /// The row keeps its token, so whoever takes the lease next gets a greater one. With notifications on, the release
    /// notifies the schema's lease channel, so standbys in other processes (<see cref="WaitForLeaseAsync"/>) take it at once.
    /// </remarks>
    public async ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        Guard.Text(lease.Name, nameof(lease));
        Guard.Text(lease.Owner, nameof(lease));
        if (_notifications)
        {
            await NonQueryAsync(
                _schema.LeaseReleaseNotify,
                cancellationToken,
                Parameters.Text(lease.Name),
                Parameters.Text(lease.Owner),
                Parameters.Bigint(lease.Token),
                Parameters.Timestamp(_timeProvider.GetUtcNow()),
                Parameters.Text(_schema.LeaseChannel)).ConfigureAwait(false);
            _listener.Leases.Wake(); // standbys in this process
        }
        else
        {
            await ChangeLeaseAsync(_schema.LeaseRelease, lease, _timeProvider.GetUtcNow(), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Returns when a lease of this schema is released (LISTEN/NOTIFY on its lease channel, from any process), when the
    /// holder's lease of <paramref name="name"/> expires (read from the lease row, against the store's
    /// <see cref="TimeProvider"/>), or after <paramref name="timeout"/>. A holder that died is taken over as its lease
    /// runs out; one that stops gracefully, at once. Without notifications, or while the listening connection is down,
    /// only the expiry and the timeout end the wait.
    /// </remarks>
    public async ValueTask WaitForLeaseAsync(string name, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        Guard.Text(name, nameof(name));
        _listener.EnsureStarted();
        var released = _listener.Leases.Next;
        var wait = timeout;
        if (await ScalarAsync(_schema.LeaseExpiry, cancellationToken, Parameters.Text(name)).ConfigureAwait(false) is DateTime expiresAt)
        {
            var left = new DateTimeOffset(DateTime.SpecifyKind(expiresAt, DateTimeKind.Utc)) - _timeProvider.GetUtcNow();
            wait = left < wait ? left : wait;
        }
        else
        {
            return; // free (released, or never taken): take it now
        }

        if (wait <= TimeSpan.Zero)
        {
            return;
        }

        using var timer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var delay = Task.Delay(wait, _timeProvider, timer.Token);
        await Task.WhenAny(released, delay).ConfigureAwait(false);
        await timer.CancelAsync().ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
    }

    private static void ValidateLease(string name, string owner, TimeSpan duration)
    {
        Guard.Text(name, nameof(name));
        Guard.Text(owner, nameof(owner));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(duration, TimeSpan.Zero);
    }

    /// <summary>Refuses, before anything runs, text that PostgreSQL cannot store (the unit itself checked the rest).</summary>
    private static void ValidateUnit(UnitOfWork work)
    {
        foreach (var append in work.Appends)
        {
            ValidateAppend(append.StreamId, append.Events);
        }

        foreach (var change in work.Documents)
        {
            Guard.Key(change.Collection, change.Id);
        }

        foreach (var change in work.Checkpoints)
        {
            Guard.Text(change.Name, nameof(work));
        }

        foreach (var claim in work.InboxClaims)
        {
            Guard.Text(claim.Consumer, nameof(work));
            Guard.Text(claim.MessageId, nameof(work));
        }

        foreach (var message in work.Outbox)
        {
            Guard.Text(message.Destination, nameof(work));
            if (message.PartitionKey is { } key)
            {
                Guard.Text(key, nameof(work));
            }
        }

        foreach (var fence in work.Fences)
        {
            Guard.Text(fence.Name, nameof(work));
            Guard.Text(fence.Owner, nameof(work));
        }
    }

    // Rows are buffered whole (no sequential access), so reading columns synchronously does not block.
    private static StoredOutboxMessage ReadOutboxMessage(NpgsqlDataReader reader) =>
        new(
            reader.GetInt64(0),
            new OutboxMessage(reader.GetString(1), (OutboxMessageKind)reader.GetInt16(2), reader.GetFieldValue<byte[]>(4)) { PartitionKey = reader.IsDBNull(3) ? null : reader.GetString(3) },
            reader.GetFieldValue<DateTimeOffset>(5));

    /// <summary>Reads the fences' result sets (one row each: the lease's holder now) and finds the first lease no longer held as fenced.</summary>
    private static async Task<(Lease? Lost, string? Holder)> ReadFencesAsync(NpgsqlDataReader reader, IReadOnlyList<Lease> fences)
    {
        (Lease? Lost, string? Holder) result = default;
        for (var i = 0; i < fences.Count; i++)
        {
            if (i > 0)
            {
                await reader.NextResultAsync(CancellationToken.None).ConfigureAwait(false);
            }

            var (owner, token) = await reader.ReadAsync(CancellationToken.None).ConfigureAwait(false) ? ReadLeaseHolder(reader) : (null, 0);
            if (result.Lost is null && (owner != fences[i].Owner || token != fences[i].Token))
            {
                result = (fences[i], owner);
            }
        }

        return result;
    }

    private static (string? Owner, long Token) ReadLeaseHolder(NpgsqlDataReader reader) =>
        (reader.IsDBNull(0) ? null : reader.GetString(0), reader.GetInt64(1));

    private static bool IsDeadlock(Exception exception) => PostgresStorageErrorClassifier.IsConflict(exception);

    /// <summary>
    /// Runs a transaction again when PostgreSQL chose it as a deadlock victim (it rolled back, so nothing of it is
    /// stored). Appends lock a stream row, then the position row; a group of units holds the position row while a
    /// later unit locks its stream rows, so the two can deadlock, and either side may be the one PostgreSQL aborts.
    /// </summary>
    private static async ValueTask<T> RetryDeadlockAsync<T>(Func<CancellationToken, ValueTask<T>> transaction, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await transaction(cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException ex) when (IsDeadlock(ex) && attempt < MaxDeadlockAttempts)
            {
            }
        }
    }

    private static NpgsqlCommand Command(NpgsqlConnection connection, NpgsqlTransaction? transaction, string sql, params ReadOnlySpan<NpgsqlParameter> parameters)
    {
        var command = new NpgsqlCommand(sql, connection, transaction);
        foreach (var parameter in parameters)
        {
            command.Parameters.Add(parameter);
        }

        return command;
    }

    private static async ValueTask<int> ExecuteAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string sql, params NpgsqlParameter[] parameters)
    {
        var command = Command(connection, transaction, sql, parameters);
        await using (command.ConfigureAwait(false))
        {
            return await command.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    private async ValueTask<bool> ChangeLeaseAsync(string sql, Lease lease, DateTimeOffset expiresAt, CancellationToken cancellationToken) =>
        await NonQueryAsync(
            sql, cancellationToken, Parameters.Text(lease.Name), Parameters.Text(lease.Owner), Parameters.Bigint(lease.Token), Parameters.Timestamp(expiresAt)).ConfigureAwait(false) == 1;

    /// <summary>Commits one unit on its own: a simple unit in one statement, any other in a transaction of its own.</summary>
    private ValueTask<UnitOfWorkResult> CommitAloneAsync(UnitOfWork work, CancellationToken cancellationToken) =>
        IsSimple(work) ? CommitSimpleAloneAsync(work, cancellationToken) : CommitGeneralAloneAsync(work, cancellationToken);

    /// <summary>Commits one unit in a transaction of its own, part by part; a unit that loses a deadlock runs again.</summary>
    private ValueTask<UnitOfWorkResult> CommitGeneralAloneAsync(UnitOfWork work, CancellationToken cancellationToken) =>
        RetryDeadlockAsync(ct => CommitAloneOnceAsync(work, ct), cancellationToken);

    /// <summary>Commits one unit in a transaction of its own. Cancellation counts until the transaction has begun.</summary>
    private async ValueTask<UnitOfWorkResult> CommitAloneOnceAsync(UnitOfWork work, CancellationToken cancellationToken)
    {
        AppliedUnit applied;
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await using (transaction.ConfigureAwait(false))
            {
                applied = await ApplyUnitAsync(connection, transaction, work).ConfigureAwait(false);
                await NotifyOutboxAsync(connection, transaction, applied.Result.LastOutboxSequence).ConfigureAwait(false);
                await CommitUnitsAsync(transaction, applied.LastPosition, applied.Result.LastOutboxSequence).ConfigureAwait(false);
            }
        }

        return applied.Result;
    }

    /// <summary>Tells other processes, on commit, that outbox messages up to <paramref name="lastSequence"/> exist (appends notify the event channel themselves).</summary>
    private async ValueTask NotifyOutboxAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, long lastSequence)
    {
        if (lastSequence > 0 && _notifications)
        {
            await ExecuteAsync(
                connection, transaction, _schema.Notify, Parameters.Text(_schema.OutboxChannel), Parameters.Text(lastSequence.ToString(CultureInfo.InvariantCulture))).ConfigureAwait(false);
        }
    }

    /// <summary>Commits the transaction of one or more applied units, then wakes this process's waiters.</summary>
    private async ValueTask CommitUnitsAsync(NpgsqlTransaction transaction, long lastPosition, long lastSequence)
    {
        await transaction.CommitAsync(CancellationToken.None).ConfigureAwait(false);
        Interlocked.Increment(ref _unitTransactions);
        PublishCommitted(lastPosition, lastSequence);
    }

    /// <summary>
    /// Commits queued units and completes each; never throws. Units that need a savepoint each are committed at most
    /// <see cref="MaxSavepointsPerTransaction"/> to a transaction, in the order they were queued.
    /// </summary>
    /// <remarks>
    /// A group is everything queued while the previous one committed, which under load is thousands of units. In one
    /// transaction that many savepoints overflow PostgreSQL's per-backend subtransaction cache (64), and every unit
    /// updates the log head row again, so each update walks the row versions the same transaction left before it:
    /// the group's cost grew with its square (10,000 workflow starts took minutes in one transaction).
    /// </remarks>
    private async Task RunUnitGroupAsync(List<PendingUnit> group)
    {
        var general = 0;
        foreach (var unit in group)
        {
            general += IsSimple(unit.Work) ? 0 : 1;
        }

        if (general <= MaxSavepointsPerTransaction)
        {
            await RunUnitTransactionAsync(group).ConfigureAwait(false);
            return;
        }

        var chunk = new List<PendingUnit>(MaxSavepointsPerTransaction);
        var savepoints = 0;
        foreach (var unit in group)
        {
            chunk.Add(unit);
            if (!IsSimple(unit.Work) && ++savepoints == MaxSavepointsPerTransaction)
            {
                await RunUnitTransactionAsync(chunk).ConfigureAwait(false);
                chunk = new List<PendingUnit>(MaxSavepointsPerTransaction);
                savepoints = 0;
            }
        }

        if (chunk.Count > 0)
        {
            await RunUnitTransactionAsync(chunk).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Commits units in one transaction and completes each; never throws. Simple units run first, together in one
    /// statement (alone when every unit is simple); each other unit runs under its own savepoint.
    /// </summary>
    private async Task RunUnitTransactionAsync(List<PendingUnit> group)
    {
        if (group.Count == 1)
        {
            await CompleteAloneAsync(group[0]).ConfigureAwait(false);
            return;
        }

        var simple = group.FindAll(static u => IsSimple(u.Work));
        if (simple.Count == group.Count)
        {
            await RunSimpleGroupAsync(group).ConfigureAwait(false);
            return;
        }

        var applied = new AppliedUnit?[group.Count];
        var failed = new Exception?[group.Count];
        var commitSent = false;
        try
        {
            var connection = await OpenAsync(CancellationToken.None).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                var transaction = await connection.BeginTransactionAsync(CancellationToken.None).ConfigureAwait(false);
                await using (transaction.ConfigureAwait(false))
                {
                    long lastPosition = 0, lastSequence = 0;
                    if (simple.Count > 0)
                    {
                        // A unit the statement refuses stored nothing: it runs again alone after the group (applied and
                        // failed stay null for it).
                        var rows = await ExecuteUnitsAsync(connection, transaction, simple.ConvertAll(static u => u.Work), notifyOutbox: false).ConfigureAwait(false);
                        for (var i = 0; i < simple.Count; i++)
                        {
                            if (rows[i].Status == 0)
                            {
                                var result = ResultOf(simple[i].Work, rows[i]);
                                var position = result.Appends.Count > 0 ? result.Appends[0].LastPosition : 0;
                                applied[group.IndexOf(simple[i])] = new AppliedUnit(result, position);
                                lastPosition = Math.Max(lastPosition, position);
                                lastSequence = Math.Max(lastSequence, result.LastOutboxSequence);
                            }
                        }
                    }

                    for (var i = 0; i < group.Count; i++)
                    {
                        if (IsSimple(group[i].Work))
                        {
                            continue;
                        }

                        await transaction.SaveAsync("unit", CancellationToken.None).ConfigureAwait(false);
                        try
                        {
                            var unit = await ApplyUnitAsync(connection, transaction, group[i].Work).ConfigureAwait(false);
                            applied[i] = unit;
                            lastPosition = Math.Max(lastPosition, unit.LastPosition);
                            lastSequence = Math.Max(lastSequence, unit.Result.LastOutboxSequence);
                        }
                        catch (Exception ex) when (ex is not NpgsqlException || ex is PostgresException)
                        {
                            // The unit's own failure: undo its part of the transaction. A deadlock victim runs again
                            // alone once the group has committed (failed stays null for it).
                            await transaction.RollbackAsync("unit", CancellationToken.None).ConfigureAwait(false);
                            failed[i] = IsDeadlock(ex) ? null : ex;
                        }
                    }

                    await NotifyOutboxAsync(connection, transaction, lastSequence).ConfigureAwait(false);
                    commitSent = true;
                    await CommitUnitsAsync(transaction, lastPosition, lastSequence).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex)
        {
            // Before the commit, nothing was stored: each unit runs again on its own and gets its own outcome. When the
            // commit itself failed its outcome is unknown (the connection broke while it ran), so the units that would
            // have committed get the failure rather than risk being stored twice.
            for (var i = 0; i < group.Count; i++)
            {
                if (commitSent && applied[i] is not null)
                {
                    group[i].Completion.TrySetException(ex);
                }
                else if (commitSent && failed[i] is { } error)
                {
                    group[i].Completion.TrySetException(error);
                }
                else
                {
                    await CompleteAloneAsync(group[i], general: true).ConfigureAwait(false);
                }
            }

            return;
        }

        if (Array.FindAll(applied, static a => a is not null).Length > 1)
        {
            Interlocked.Increment(ref _unitGroups);
        }

        for (var i = 0; i < group.Count; i++)
        {
            if (applied[i] is { } unit)
            {
                group[i].Completion.TrySetResult(unit.Result);
            }
            else if (failed[i] is { } error)
            {
                group[i].Completion.TrySetException(error);
            }
            else
            {
                await CompleteAloneAsync(group[i], general: true).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Commits a unit on its own and completes it; <paramref name="general"/> skips the one-statement path (which already refused it).</summary>
    private async Task CompleteAloneAsync(PendingUnit unit, bool general = false)
    {
        try
        {
            var result = general
                ? await CommitGeneralAloneAsync(unit.Work, CancellationToken.None).ConfigureAwait(false)
                : await CommitAloneAsync(unit.Work, CancellationToken.None).ConfigureAwait(false);
            unit.Completion.TrySetResult(result);
        }
        catch (Exception ex)
        {
            unit.Completion.TrySetException(ex);
        }
    }

    /// <summary>Writes every part of a unit in the open transaction; throws the first failing part's exception.</summary>
    private async ValueTask<AppliedUnit> ApplyUnitAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, UnitOfWork work)
    {
        var none = CancellationToken.None;
        var now = _timeProvider.GetUtcNow();

        // Fences, checkpoints and document changes go in one round trip (the document changes in a second one when inbox
        // claims, which may wait for a concurrent claim, come between): a projection's page is one round trip and the
        // commit, not one per document. The savepoint the appends start with travels in the same round trip, and so do
        // the appends themselves when one commit_units call takes them all and no claims come between.
        var claims = work.InboxClaims.Count > 0;
        var appends = work.Appends;
        var results = new AppendResult[appends.Count];
        long lastPosition = 0;
        bool atOnce, saved, appended;
        if (!claims && CanAppendAllAtOnce(appends, minimum: 1))
        {
            // Without inbox claims nothing has to come between the state parts and the appends: one round trip runs them
            // all (with the savepoint the appends start with), then the commit is the second.
            atOnce = saved = true;
            appended = await ApplyStateAndAppendsAsync(connection, transaction, work, results, now).ConfigureAwait(false);
        }
        else
        {
            atOnce = CanAppendAllAtOnce(appends, minimum: 2);
            var savepoint = appends.Count == 0 ? null : atOnce ? AppendsSavepoint : AppendSavepoint;
            saved = await ApplyStatePartsAsync(connection, transaction, work, documents: !claims, now, claims ? null : savepoint).ConfigureAwait(false);
            if (claims)
            {
                await ClaimInboxAsync(connection, transaction, work.InboxClaims, now).ConfigureAwait(false);
                saved = await ApplyStatePartsAsync(connection, transaction, work.Documents, now, savepoint).ConfigureAwait(false);
            }

            appended = atOnce && await TryAppendAllAtOnceAsync(connection, transaction, appends, results, saved).ConfigureAwait(false);
        }

        if (appended)
        {
            foreach (var result in results)
            {
                lastPosition = Math.Max(lastPosition, result.LastPosition);
            }

            appends = [];
        }

        for (var i = 0; i < appends.Count; i++)
        {
            var (streamId, expectedVersion, events, inlineProjection) = appends[i];

            // The savepoint lets a refused append (which may be an exact retry) be undone while the unit goes on. The first
            // one may have been set with the state parts already (nothing ran since).
            if (i > 0 || !saved || atOnce)
            {
                await transaction.SaveAsync(AppendSavepoint, none).ConfigureAwait(false);
            }

            try
            {
                results[i] = await AppendCoreAsync(connection, transaction, streamId, expectedVersion, events, none).ConfigureAwait(false);
            }
            catch (PostgresException ex) when (IsRefusedAppend(ex))
            {
                await transaction.RollbackAsync(AppendSavepoint, none).ConfigureAwait(false);
                results[i] = await ResolveRefusedAppendAsync(connection, ex, streamId, expectedVersion, events, none).ConfigureAwait(false);
                continue;
            }

            lastPosition = results[i].LastPosition;
            if (inlineProjection is not null)
            {
                await ProjectAsync(connection, transaction, streamId, events, results[i], inlineProjection, none).ConfigureAwait(false);
            }
        }

        var lastSequence = work.Outbox.Count > 0 ? await EnqueueAsync(connection, transaction, work.Outbox, now).ConfigureAwait(false) : 0;
        return new AppliedUnit(results.Length == 0 && lastSequence == 0 ? UnitOfWorkResult.Empty : new UnitOfWorkResult(results, lastSequence), lastPosition);
    }

    /// <summary>Gets whether <c>commit_units</c> can take <paramref name="appends"/> in one call: at least <paramref name="minimum"/>, to distinct streams, none with an inline projection.</summary>
    private static bool CanAppendAllAtOnce(IReadOnlyList<UnitOfWorkAppend> appends, int minimum)
    {
        if (appends.Count < minimum)
        {
            return false;
        }

        var streams = new HashSet<string>(appends.Count, StringComparer.Ordinal);
        foreach (var append in appends)
        {
            if (append.InlineProjection is not null || !streams.Add(append.StreamId))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Appends to two or more distinct streams (none with an inline projection) in one statement (<c>commit_units</c>) under
    /// one savepoint, in the order they were added: a unit with many appends, such as a group of workflow tasks, takes one round trip and one update of
    /// the log head, instead of a savepoint, a statement and a head update for each append (whose cost grew with the square
    /// of the appends in one transaction, as each head update walks the row versions the earlier ones left). When the
    /// statement refuses any append, everything it did is undone and the caller appends one at a time, which resolves an
    /// exact retry and throws a conflict as before.
    /// </summary>
    private async ValueTask<bool> TryAppendAllAtOnceAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, IReadOnlyList<UnitOfWorkAppend> appends, AppendResult[] results, bool saved)
    {
        var units = AppendUnits(appends);
        var none = CancellationToken.None;
        if (!saved)
        {
            await transaction.SaveAsync(AppendsSavepoint, none).ConfigureAwait(false);
        }

        UnitRow[] rows;
        try
        {
            rows = await ExecuteUnitsAsync(connection, transaction, units, notifyOutbox: false, inOrder: true).ConfigureAwait(false);
        }
        catch (PostgresException)
        {
            await transaction.RollbackAsync(AppendsSavepoint, none).ConfigureAwait(false);
            return false;
        }

        foreach (var row in rows)
        {
            if (row.Status != 0)
            {
                await transaction.RollbackAsync(AppendsSavepoint, none).ConfigureAwait(false);
                return false;
            }
        }

        for (var i = 0; i < units.Length; i++)
        {
            results[i] = ResultOf(units[i], rows[i]).Appends[0];
        }

        return true;
    }

    /// <summary>One unit of work per append, as <c>commit_units</c> takes them.</summary>
    private static UnitOfWork[] AppendUnits(IReadOnlyList<UnitOfWorkAppend> appends)
    {
        var units = new UnitOfWork[appends.Count];
        for (var i = 0; i < units.Length; i++)
        {
            var append = appends[i];
            units[i] = new UnitOfWork().Append(append.StreamId, append.ExpectedVersion, append.Events);
        }

        return units;
    }

    /// <summary>
    /// Runs a unit's fences, checkpoints, document changes, the savepoint its appends start with and the appends themselves
    /// (to distinct streams, none with an inline projection, in one <c>commit_units</c> call in the order they were added) as
    /// one batch: one round trip. Throws what the first failing state part would throw, as
    /// <see cref="ApplyStatePartsAsync(NpgsqlConnection, NpgsqlTransaction, UnitOfWork, bool, DateTimeOffset, string?)"/> does.
    /// Returns whether every append was stored (their results in <paramref name="results"/>); when the call refused any
    /// append or failed, everything it did is undone (back to the savepoint) and the caller appends one at a time.
    /// </summary>
    private async ValueTask<bool> ApplyStateAndAppendsAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, UnitOfWork work, AppendResult[] results, DateTimeOffset now)
    {
        var fences = work.Fences;
        var checkpoints = work.Checkpoints;
        var units = AppendUnits(work.Appends);
        UnitRow[]? rows = null;
        Lease? lost = null;
        string? holder = null;
        var batch = new NpgsqlBatch(connection, transaction);
        await using (batch.ConfigureAwait(false))
        {
            foreach (var fence in fences)
            {
                batch.BatchCommands.Add(Command(_schema.LeaseFence, Parameters.Text(fence.Name)));
            }

            foreach (var change in checkpoints)
            {
                batch.BatchCommands.Add(CheckpointCommand(change, now));
            }

            AddDocumentCommands(batch, work.Documents, now);
            batch.BatchCommands.Add(new NpgsqlBatchCommand("SAVEPOINT " + AppendsSavepoint));
            var appendCommand = new NpgsqlBatchCommand(_schema.CommitUnits);
            var order = AddUnitParameters(appendCommand.Parameters, units, notifyOutbox: false, inOrder: true);
            batch.BatchCommands.Add(appendCommand);
            try
            {
                var reader = await batch.ExecuteReaderAsync(CancellationToken.None).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    (lost, holder) = await ReadFencesAsync(reader, fences).ConfigureAwait(false);

                    // Statements without rows (checkpoints, documents, the savepoint) are skipped on the way to the appends' rows.
                    if (fences.Count > 0)
                    {
                        await reader.NextResultAsync(CancellationToken.None).ConfigureAwait(false);
                    }

                    rows = await ReadUnitRowsAsync(reader, order).ConfigureAwait(false);
                }
            }
            catch (PostgresException ex) when (ex.BatchCommand == appendCommand && !IsDeadlock(ex))
            {
                // The appends failed (an event id a concurrent transaction stored first); the state parts ran. A deadlock
                // victim is not: appended one by one it would wait for the same rows again, so the unit fails as one and
                // runs again (alone after its group, or as a new transaction).
                await transaction.RollbackAsync(AppendsSavepoint, CancellationToken.None).ConfigureAwait(false);
            }

            if (lost is not null)
            {
                throw new LeaseLostException(lost, holder);
            }

            for (var i = 0; i < checkpoints.Count; i++)
            {
                if (batch.BatchCommands[fences.Count + i].RecordsAffected == 0)
                {
                    await ThrowCheckpointConflictAsync(connection, transaction, checkpoints[i]).ConfigureAwait(false);
                }
            }
        }

        if (rows is null)
        {
            return false;
        }

        foreach (var row in rows)
        {
            if (row.Status != 0)
            {
                await transaction.RollbackAsync(AppendsSavepoint, CancellationToken.None).ConfigureAwait(false);
                return false;
            }
        }

        for (var i = 0; i < units.Length; i++)
        {
            results[i] = ResultOf(units[i], rows[i]).Appends[0];
        }

        return true;
    }

    /// <summary>
    /// Runs a unit's fences, then its checkpoints, then (with <paramref name="documents"/>) its document changes, as one
    /// batch (one round trip), and throws what the first failing part would throw: <see cref="LeaseLostException"/> for a
    /// fence another owner holds, <see cref="CheckpointConflictException"/> for a checkpoint that is not where it was
    /// expected. The parts after a failing one ran too, but the caller rolls the unit back. With
    /// <paramref name="savepoint"/>, the batch ends by setting it; returns whether it did (false when there was nothing to run).
    /// </summary>
    private async ValueTask<bool> ApplyStatePartsAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, UnitOfWork work, bool documents, DateTimeOffset now, string? savepoint)
    {
        var fences = work.Fences;
        var checkpoints = work.Checkpoints;
        if (fences.Count == 0 && checkpoints.Count == 0)
        {
            return documents && await ApplyStatePartsAsync(connection, transaction, work.Documents, now, savepoint).ConfigureAwait(false);
        }

        var batch = new NpgsqlBatch(connection, transaction);
        await using (batch.ConfigureAwait(false))
        {
            foreach (var fence in fences)
            {
                batch.BatchCommands.Add(Command(_schema.LeaseFence, Parameters.Text(fence.Name)));
            }

            foreach (var change in checkpoints)
            {
                batch.BatchCommands.Add(CheckpointCommand(change, now));
            }

            if (documents)
            {
                AddDocumentCommands(batch, work.Documents, now);
            }

            if (savepoint is not null)
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand("SAVEPOINT " + savepoint));
            }

            Lease? lost = null;
            string? holder = null;
            var reader = await batch.ExecuteReaderAsync(CancellationToken.None).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                (lost, holder) = await ReadFencesAsync(reader, fences).ConfigureAwait(false);
            }

            if (lost is not null)
            {
                throw new LeaseLostException(lost, holder);
            }

            for (var i = 0; i < checkpoints.Count; i++)
            {
                if (batch.BatchCommands[fences.Count + i].RecordsAffected == 0)
                {
                    await ThrowCheckpointConflictAsync(connection, transaction, checkpoints[i]).ConfigureAwait(false);
                }
            }
        }

        return true;
    }

    /// <summary>Runs document changes as one batch (one round trip), ending with setting <paramref name="savepoint"/> when given; returns whether it ran (false for no changes).</summary>
    private async ValueTask<bool> ApplyStatePartsAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, IReadOnlyList<DocumentChange> changes, DateTimeOffset now, string? savepoint)
    {
        if (changes.Count == 0)
        {
            return false;
        }

        var batch = new NpgsqlBatch(connection, transaction);
        await using (batch.ConfigureAwait(false))
        {
            AddDocumentCommands(batch, changes, now);
            if (savepoint is not null)
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand("SAVEPOINT " + savepoint));
            }

            await batch.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>
    /// Adds a unit's document changes: one statement for one change, else one upsert of every stored document and one
    /// delete of every removed one (arrays, not a statement per document: a group of workflow tasks carries dozens).
    /// When a document changes more than once, its last change is the one applied, as applying them in order would leave.
    /// </summary>
    private void AddDocumentCommands(NpgsqlBatch batch, IReadOnlyList<DocumentChange> changes, DateTimeOffset now)
    {
        if (changes.Count == 1)
        {
            var change = changes[0];
            batch.BatchCommands.Add(change.IsDelete
                ? Command(_schema.DeleteDocument, Parameters.Text(change.Collection), Parameters.Text(change.Id))
                : Command(_schema.UpsertDocument, Parameters.Text(change.Collection), Parameters.Text(change.Id), Parameters.Bytes(change.Document), Parameters.Timestamp(now)));
            return;
        }

        // The last change of each document; one statement may not change a row twice.
        var last = new Dictionary<(string Collection, string Id), int>(changes.Count);
        for (var i = 0; i < changes.Count; i++)
        {
            last[(changes[i].Collection, changes[i].Id)] = i;
        }

        // In (collection, id) order, ordinal: two units that upsert the same documents lock their rows in the same order
        // (the rows are locked as the arrays list them), where the order the changes were made in could cross and
        // deadlock. Upserts run before deletes, so a unit that upserts a document another deletes can still cross it:
        // PostgreSQL detects that and the losing transaction runs again (RetryDeadlockAsync), as with a statement per document.
        var kept = new int[last.Count];
        last.Values.CopyTo(kept, 0);
        Array.Sort(kept, (a, b) =>
        {
            var byCollection = string.CompareOrdinal(changes[a].Collection, changes[b].Collection);
            return byCollection != 0 ? byCollection : string.CompareOrdinal(changes[a].Id, changes[b].Id);
        });

        List<string>? upsertCollections = null, upsertIds = null, deleteCollections = null, deleteIds = null;
        List<byte[]>? data = null;
        foreach (var i in kept)
        {
            var change = changes[i];

            if (change.IsDelete)
            {
                (deleteCollections ??= []).Add(change.Collection);
                (deleteIds ??= []).Add(change.Id);
            }
            else
            {
                (upsertCollections ??= []).Add(change.Collection);
                (upsertIds ??= []).Add(change.Id);
                (data ??= []).Add(AsArray(change.Document));
            }
        }

        if (upsertCollections is not null)
        {
            batch.BatchCommands.Add(Command(
                _schema.UpsertDocuments,
                Parameters.Array(upsertCollections.ToArray(), NpgsqlDbType.Text),
                Parameters.Array(upsertIds!.ToArray(), NpgsqlDbType.Text),
                Parameters.Array(data!.ToArray(), NpgsqlDbType.Bytea),
                Parameters.Timestamp(now)));
        }

        if (deleteCollections is not null)
        {
            batch.BatchCommands.Add(Command(
                _schema.DeleteDocuments, Parameters.Array(deleteCollections.ToArray(), NpgsqlDbType.Text), Parameters.Array(deleteIds!.ToArray(), NpgsqlDbType.Text)));
        }
    }

    /// <summary>Saves a checkpoint; with an expected position, only when the stored one (0 when missing) is that position (else it changes no row).</summary>
    private NpgsqlBatchCommand CheckpointCommand(CheckpointChange change, DateTimeOffset now)
    {
        var (name, position, expectedPosition) = change;
        return expectedPosition switch
        {
            null => Command(_schema.SaveCheckpoint, Parameters.Text(name), Parameters.Bigint(position), Parameters.Timestamp(now)),
            0 => Command(_schema.CheckpointCompareFromZero, Parameters.Text(name), Parameters.Bigint(position), Parameters.Timestamp(now)),
            { } expected => Command(_schema.CheckpointCompare, Parameters.Text(name), Parameters.Bigint(position), Parameters.Timestamp(now), Parameters.Bigint(expected)),
        };
    }

    private async ValueTask ThrowCheckpointConflictAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CheckpointChange change)
    {
        var command = Command(connection, transaction, _schema.LoadCheckpoint, Parameters.Text(change.Name));
        await using (command.ConfigureAwait(false))
        {
            var actual = await command.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false) as long? ?? 0;
            throw new CheckpointConflictException(change.Name, change.ExpectedPosition!.Value, actual);
        }
    }

    /// <summary>
    /// Inserts the claims; a claim that inserts nothing is already recorded (or was committed first by a concurrent
    /// transaction, which the insert waits for), and fails the unit with <see cref="DuplicateMessageException"/>.
    /// </summary>
    private async ValueTask ClaimInboxAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, IReadOnlyList<InboxClaim> claims, DateTimeOffset now)
    {
        var consumers = new string[claims.Count];
        var ids = new string[claims.Count];
        for (var i = 0; i < claims.Count; i++)
        {
            (consumers[i], ids[i]) = claims[i];
        }

        var inserted = new HashSet<InboxClaim>();
        var command = Command(
            connection, transaction, _schema.InboxClaim, Parameters.Array(consumers, NpgsqlDbType.Text), Parameters.Array(ids, NpgsqlDbType.Text), Parameters.Timestamp(now));
        await using (command.ConfigureAwait(false))
        {
            var reader = await command.ExecuteReaderAsync(CancellationToken.None).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.ReadAsync(CancellationToken.None).ConfigureAwait(false))
                {
                    inserted.Add(new InboxClaim(reader.GetString(0), reader.GetString(1)));
                }
            }
        }

        // Each inserted row answers one claim; a claim repeated within the unit finds its row taken by the first.
        foreach (var claim in claims)
        {
            if (!inserted.Remove(claim))
            {
                throw new DuplicateMessageException(claim.Consumer, claim.MessageId);
            }
        }
    }

    /// <summary>Stores outbox messages under the position lock, so their sequence numbers commit in increasing order; returns the last.</summary>
    private async ValueTask<long> EnqueueAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, IReadOnlyList<OutboxMessage> messages, DateTimeOffset now)
    {
        await ExecuteAsync(connection, transaction, _schema.LockPositions).ConfigureAwait(false);
        var destinations = new string[messages.Count];
        var kinds = new short[messages.Count];
        var keys = new string?[messages.Count];
        var payloads = new byte[messages.Count][];
        for (var i = 0; i < messages.Count; i++)
        {
            destinations[i] = messages[i].Destination;
            kinds[i] = (short)messages[i].Kind;
            keys[i] = messages[i].PartitionKey;
            payloads[i] = AsArray(messages[i].Payload);
        }

        long last = 0;
        var command = Command(
            connection,
            transaction,
            _schema.Enqueue,
            Parameters.Array(destinations, NpgsqlDbType.Text),
            Parameters.Array(kinds, NpgsqlDbType.Smallint),
            Parameters.Array(keys, NpgsqlDbType.Text),
            Parameters.Array(payloads, NpgsqlDbType.Bytea),
            Parameters.Timestamp(now));
        await using (command.ConfigureAwait(false))
        {
            var reader = await command.ExecuteReaderAsync(CancellationToken.None).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.ReadAsync(CancellationToken.None).ConfigureAwait(false))
                {
                    last = Math.Max(last, reader.GetInt64(0));
                }
            }
        }

        return last;
    }

    /// <summary>A unit applied in an open transaction: its result, and the last position its appends stored (0 for none).</summary>
    private readonly record struct AppliedUnit(UnitOfWorkResult Result, long LastPosition);

    /// <summary>A unit of work waiting for the next group.</summary>
    private sealed class PendingUnit(UnitOfWork work) : GroupQueue<PendingUnit, UnitOfWorkResult>.Pending
    {
        public UnitOfWork Work { get; } = work;
    }
}
