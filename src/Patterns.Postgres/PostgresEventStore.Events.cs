using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Npgsql;
using NpgsqlTypes;
using Patterns.Storage;

namespace Patterns.Postgres;

public sealed partial class PostgresEventStore
{
    /// <inheritdoc />
    public EventStorageCapabilities Capabilities =>
        EventStorageCapabilities.HardDelete | EventStorageCapabilities.TransactionalProjections | EventStorageCapabilities.Durable;

    /// <inheritdoc />
    /// <remarks>
    /// <para>
    /// One round trip without inline projections. The expected-version check, the idempotency check (a unique index on
    /// stream and event id) and the insert run in one transaction; a retried append that finds its events already
    /// stored returns the original result.
    /// </para>
    /// <para>
    /// Appends without inline projections that arrive while another is running are committed together in one
    /// transaction (group commit), each with its own outcome: one append's conflict never fails another. Cancelling
    /// such an append takes effect only while it waits for its group. With <paramref name="inlineProjection"/>, the
    /// append runs alone, and the projection runs in its transaction while it holds the position lock (other appends
    /// wait), so keep it short.
    /// </para>
    /// </remarks>
    public ValueTask<AppendResult> AppendAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        IReadOnlyList<SerializedEvent> events,
        InlineProjection? inlineProjection = null,
        CancellationToken cancellationToken = default)
    {
        ValidateAppend(streamId, events);
        return inlineProjection is null
            ? AppendGroupedAsync(streamId, expectedVersion, events, cancellationToken)
            : AppendOneAsync(streamId, expectedVersion, events, inlineProjection, cancellationToken);
    }

    /// <summary>Appends one batch in a transaction of its own (again if it loses a deadlock), mapping the function's errors to the SPI's exceptions.</summary>
    private ValueTask<AppendResult> AppendOneAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        IReadOnlyList<SerializedEvent> events,
        InlineProjection? inlineProjection,
        CancellationToken cancellationToken) =>
        RetryDeadlockAsync(ct => AppendOnceAsync(streamId, expectedVersion, events, inlineProjection, ct), cancellationToken);

    private async ValueTask<AppendResult> AppendOnceAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        IReadOnlyList<SerializedEvent> events,
        InlineProjection? inlineProjection,
        CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            AppendResult result;
            try
            {
                result = inlineProjection is null
                    ? await AppendCoreAsync(connection, null, streamId, expectedVersion, events, cancellationToken).ConfigureAwait(false)
                    : await AppendWithProjectionAsync(connection, streamId, expectedVersion, events, inlineProjection, cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException ex) when (IsRefusedAppend(ex))
            {
                // The failed transaction has rolled back; a retried append arrives with the expected version it had
                // the first time, which no longer holds.
                return await ResolveRefusedAppendAsync(connection, ex, streamId, expectedVersion, events, cancellationToken).ConfigureAwait(false);
            }

            _listener.Publish(result.LastPosition);
            return result;
        }
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<StoredEvent> ReadStreamAsync(
        string streamId,
        ReadDirection direction = ReadDirection.Forward,
        long? fromVersion = null,
        long maxCount = long.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Guard.Text(streamId, nameof(streamId));
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        if (fromVersion is { } from)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(from, nameof(fromVersion));
        }

        if (maxCount == 0)
        {
            yield break;
        }

        var forward = direction == ReadDirection.Forward;
        var next = fromVersion ?? (forward ? 1 : long.MaxValue);
        var remaining = maxCount;
        var first = true;
        while (remaining > 0 && next > 0)
        {
            var limit = (int)Math.Min(remaining, _pageSize);
            var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                var batch = new NpgsqlBatch(connection);
                await using (batch.ConfigureAwait(false))
                {
                    if (first)
                    {
                        // The stream's state travels with the first page: one round trip for a short stream.
                        batch.BatchCommands.Add(Command(_schema.StreamState, Parameters.Text(streamId)));
                    }

                    batch.BatchCommands.Add(Command(
                        forward ? _schema.ReadStreamForward : _schema.ReadStreamBackward,
                        Parameters.Text(streamId),
                        Parameters.Bigint(next),
                        Parameters.Integer(limit)));

                    var reader = await batch.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                    await using (reader.ConfigureAwait(false))
                    {
                        if (first)
                        {
                            first = false;
                            if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                            {
                                yield break;
                            }

                            if (reader.GetBoolean(1))
                            {
                                throw new StreamDeletedException(streamId);
                            }

                            await reader.NextResultAsync(cancellationToken).ConfigureAwait(false);
                        }

                        var count = 0;
                        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                        {
                            var e = ReadEvent(reader, streamId);
                            next = forward ? e.Version + 1 : e.Version - 1;
                            count++;
                            yield return e;
                        }

                        remaining -= count;
                        if (count < limit)
                        {
                            yield break;
                        }
                    }
                }
            }
        }
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<StoredEvent> ReadAllAsync(
        long afterPosition = 0,
        EventFilter? filter = null,
        long maxCount = long.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(afterPosition);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        var types = filter?.EventTypes is { Count: > 0 } selected ? selected.ToArray() : null;
        var prefix = filter?.StreamPrefix;
        var sql = (types, prefix) switch
        {
            (null, null) => _schema.ReadAll,
            (not null, null) => _schema.ReadAllByType,
            (null, not null) => _schema.ReadAllByPrefix,
            _ => _schema.ReadAllByTypeAndPrefix,
        };

        var after = afterPosition;
        var remaining = maxCount;
        while (remaining > 0)
        {
            var limit = (int)Math.Min(remaining, _pageSize);
            var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                var command = new NpgsqlCommand(sql, connection);
                await using (command.ConfigureAwait(false))
                {
                    command.Parameters.Add(Parameters.Bigint(after));
                    command.Parameters.Add(Parameters.Integer(limit));
                    if (types is not null || prefix is not null)
                    {
                        command.Parameters.Add(Parameters.Array(types ?? [], NpgsqlDbType.Text));
                    }

                    if (prefix is not null)
                    {
                        command.Parameters.Add(Parameters.Text(prefix));
                    }

                    var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                    await using (reader.ConfigureAwait(false))
                    {
                        var count = 0;
                        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                        {
                            var e = ReadEvent(reader, null);
                            after = e.Position;
                            count++;
                            yield return e;
                        }

                        remaining -= count;
                        if (count < limit)
                        {
                            yield break;
                        }
                    }
                }
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default)
    {
        Guard.Text(streamId, nameof(streamId));
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var command = new NpgsqlCommand(_schema.StreamState, connection);
            await using (command.ConfigureAwait(false))
            {
                command.Parameters.Add(Parameters.Text(streamId));
                var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    return await reader.ReadAsync(cancellationToken).ConfigureAwait(false)
                        ? new StreamState(streamId, reader.GetInt64(0), reader.GetBoolean(1), reader.GetInt64(2))
                        : new StreamState(streamId, 0, false, 0);
                }
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// The last position given to a committed event (including events hard-deleted since). Every position up to it is
    /// readable without a gap below it, because positions commit in order.
    /// </remarks>
    public async ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default) =>
        (long)(await ScalarAsync(_schema.HeadPosition, cancellationToken).ConfigureAwait(false))!;

    /// <inheritdoc />
    /// <remarks>
    /// A stream that never existed is recorded as deleted, so its id cannot be used afterwards. A hard delete also
    /// removes the stream's snapshot. Hard-deleted positions are holes in the global log and are never reused.
    /// </remarks>
    public async ValueTask DeleteStreamAsync(
        string streamId,
        ExpectedVersion expectedVersion,
        StreamDeleteMode mode = StreamDeleteMode.Soft,
        CancellationToken cancellationToken = default)
    {
        Guard.Text(streamId, nameof(streamId));
        try
        {
            await NonQueryAsync(
                _schema.Delete, cancellationToken, Parameters.Text(streamId), Parameters.Bigint(expectedVersion.Value), Parameters.Boolean(mode == StreamDeleteMode.Hard)).ConfigureAwait(false);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresSchema.WrongExpectedVersionState)
        {
            throw new WrongExpectedVersionException(streamId, expectedVersion, ActualVersion(ex));
        }
    }

    /// <inheritdoc />
    /// <exception cref="StreamDeletedException">The stream was deleted.</exception>
    public async ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default)
    {
        Guard.Text(streamId, nameof(streamId));
        ArgumentOutOfRangeException.ThrowIfNegative(beforeVersion);
        if (await ScalarAsync(_schema.Truncate, cancellationToken, Parameters.Text(streamId), Parameters.Bigint(beforeVersion)).ConfigureAwait(false) is true)
        {
            throw new StreamDeletedException(streamId);
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Appends by this store instance wake waiters at once. Appends by other processes wake them through
    /// LISTEN/NOTIFY (when <see cref="PostgresEventStoreOptions.Notifications"/> is on); otherwise, or while the
    /// listening connection is down, the wait ends after <see cref="PostgresEventStoreOptions.PollInterval"/>.
    /// </remarks>
    public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken) =>
        WaitForSignalAsync(_listener.Events, afterPosition, _schema.HeadPosition, cancellationToken);

    /// <summary>
    /// Waits until <paramref name="signal"/> passes <paramref name="after"/>, the stored head (read by
    /// <paramref name="headSql"/>) is past it, or the poll interval ends.
    /// </summary>
    private async ValueTask WaitForSignalAsync(NotificationListener.Signal signal, long after, string headSql, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _listener.EnsureStarted();
        var next = signal.Next;
        if (signal.Known > after)
        {
            return;
        }

        // Commits by other processes before this store listened, or while notifications are off, show in the head. Once
        // the head was read while the current connection listened, every later commit is announced (by this store at
        // once, by others through NOTIFY), so the head is not read again until the connection changes.
        var listening = _listener.Listening;
        if (!signal.IsComplete(listening))
        {
            var head = (long)(await ScalarAsync(headSql, cancellationToken).ConfigureAwait(false))!;
            signal.HeadRead(listening);

            // Waking the others when it moves: a waiter that read the head before this commit may not get its notification's wake.
            signal.Publish(head);
            if (head > after)
            {
                return;
            }

            // That wake may have completed the signal taken above: take it again, and check again what it may have missed.
            next = signal.Next;
            if (signal.Known > after)
            {
                return;
            }
        }

        // After the poll interval the caller re-reads, which picks up anything a lost notification announced. The
        // timer is disposed before this returns, so no timer outlives the wait.
        var poll = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var timer = _timeProvider.CreateTimer(static state => ((TaskCompletionSource)state!).TrySetResult(), poll, _pollInterval, Timeout.InfiniteTimeSpan);
        await using (timer.ConfigureAwait(false))
        {
            await Task.WhenAny(next, poll.Task).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private static void ValidateAppend(string streamId, IReadOnlyList<SerializedEvent> events)
    {
        Guard.Text(streamId, nameof(streamId));
        EventStorageArguments.ValidateAppend(streamId, events);
        foreach (var e in events)
        {
            Guard.EventText(e.EventType, "event type", e.EventId);
            Guard.EventText(e.CorrelationId, "correlation id", e.EventId);
            Guard.EventText(e.CausationId, "causation id", e.EventId);
        }
    }

    private static long ActualVersion(PostgresException exception)
    {
        var text = exception.MessageText;
        return long.Parse(text.AsSpan(text.LastIndexOf(' ') + 1), NumberStyles.None, CultureInfo.InvariantCulture);
    }

    private static byte[] AsArray(ReadOnlyMemory<byte> memory) =>
        MemoryMarshal.TryGetArray(memory, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : memory.ToArray();

    private static NpgsqlBatchCommand Command(string sql, params ReadOnlySpan<NpgsqlParameter> parameters)
    {
        var command = new NpgsqlBatchCommand(sql);
        foreach (var parameter in parameters)
        {
            command.Parameters.Add(parameter);
        }

        return command;
    }

    private static StoredEvent ReadEvent(NpgsqlDataReader reader, string? streamId) =>
        new(
            reader.GetGuid(0),
            streamId ?? reader.GetString(1),
            reader.GetInt64(2),
            reader.GetInt64(3),
            reader.GetString(4),
            reader.GetFieldValue<byte[]>(5),
            reader.GetFieldValue<DateTimeOffset>(6))
        {
            CorrelationId = reader.IsDBNull(7) ? null : reader.GetString(7),
            CausationId = reader.IsDBNull(8) ? null : reader.GetString(8),
            Metadata = reader.IsDBNull(9) ? default : reader.GetFieldValue<byte[]>(9),
        };

    private async ValueTask<AppendResult> AppendWithProjectionAsync(
        NpgsqlConnection connection,
        string streamId,
        ExpectedVersion expectedVersion,
        IReadOnlyList<SerializedEvent> events,
        InlineProjection inlineProjection,
        CancellationToken cancellationToken)
    {
        var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await using (transaction.ConfigureAwait(false))
        {
            var result = await AppendCoreAsync(connection, transaction, streamId, expectedVersion, events, cancellationToken).ConfigureAwait(false);
            await ProjectAsync(connection, transaction, streamId, events, result, inlineProjection, cancellationToken).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            return result;
        }
    }

    /// <summary>Runs an inline projection over appended events, with a document writer bound to the append's transaction.</summary>
    private async ValueTask ProjectAsync(
        NpgsqlConnection connection,
        NpgsqlTransaction transaction,
        string streamId,
        IReadOnlyList<SerializedEvent> events,
        AppendResult result,
        InlineProjection inlineProjection,
        CancellationToken cancellationToken)
    {
        var stored = StoredEvent.FromAppend(streamId, result.Version - events.Count + 1, result.FirstPosition, events);

        var writer = new PostgresDocumentWriter(_schema, connection, transaction, _timeProvider);
        try
        {
            await inlineProjection(stored, writer, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            writer.Complete();
        }
    }

    /// <summary>Whether an append function's error is one the SPI gives its own outcome (a deleted stream, a version conflict, a reused event id).</summary>
    private static bool IsRefusedAppend(PostgresException exception) =>
        exception.SqlState is PostgresSchema.StreamDeletedState or PostgresSchema.WrongExpectedVersionState
        || (exception.SqlState == PostgresErrorCodes.UniqueViolation && exception.ConstraintName is PostgresSchema.EventIdConstraint or PostgresSchema.StreamVersionConstraint);

    /// <summary>
    /// After an append refused with <paramref name="exception"/> and rolled back (see <see cref="IsRefusedAppend"/>):
    /// returns the original result of an exact retry, or throws the SPI's exception.
    /// </summary>
    private async ValueTask<AppendResult> ResolveRefusedAppendAsync(
        NpgsqlConnection connection, PostgresException exception, string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, CancellationToken cancellationToken)
    {
        if (exception.SqlState == PostgresSchema.StreamDeletedState)
        {
            throw new StreamDeletedException(streamId);
        }

        if (exception.ConstraintName == PostgresSchema.StreamVersionConstraint)
        {
            // The stream row lock makes this unreachable; kept so a concurrent writer can never surface as a raw error.
            var state = await GetStreamStateAsync(streamId, cancellationToken).ConfigureAwait(false);
            throw new WrongExpectedVersionException(streamId, expectedVersion, state.Version);
        }

        var retry = await FindRetryAsync(connection, streamId, expectedVersion, events, cancellationToken).ConfigureAwait(false);
        return retry ?? throw (exception.SqlState == PostgresSchema.WrongExpectedVersionState
            ? new WrongExpectedVersionException(streamId, expectedVersion, ActualVersion(exception))
            : new DuplicateEventException(streamId, events[0].EventId));
    }

    private async ValueTask<AppendResult> AppendCoreAsync(
        NpgsqlConnection connection,
        NpgsqlTransaction? transaction,
        string streamId,
        ExpectedVersion expectedVersion,
        IReadOnlyList<SerializedEvent> events,
        CancellationToken cancellationToken)
    {
        var count = events.Count;
        var columns = new EventColumns(count);
        for (var i = 0; i < count; i++)
        {
            columns.Set(i, events[i]);
        }

        var command = new NpgsqlCommand(_schema.Append, connection, transaction);
        await using (command.ConfigureAwait(false))
        {
            var parameters = command.Parameters;
            parameters.Add(Parameters.Text(streamId));
            parameters.Add(Parameters.Bigint(expectedVersion.Value));
            columns.AddTo(parameters);
            parameters.Add(Channel());
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                var version = reader.GetInt64(0);
                var firstPosition = reader.GetInt64(1);
                return new AppendResult(streamId, version, firstPosition, firstPosition + count - 1);
            }
        }
    }

    /// <summary>
    /// After a failed append: returns the original result when every event is already stored, consecutively, where
    /// the expected version puts them (an exact retry); throws <see cref="DuplicateEventException"/> when some ids are
    /// stored any other way; returns null when none is stored.
    /// </summary>
    private async ValueTask<AppendResult?> FindRetryAsync(
        NpgsqlConnection connection, string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, CancellationToken cancellationToken)
    {
        var ids = new Guid[events.Count];
        for (var i = 0; i < ids.Length; i++)
        {
            ids[i] = events[i].EventId;
        }

        var stored = new Dictionary<Guid, (long Version, long Position)>();
        var command = new NpgsqlCommand(_schema.FindEventIds, connection);
        await using (command.ConfigureAwait(false))
        {
            command.Parameters.Add(Parameters.Text(streamId));
            command.Parameters.Add(Parameters.Array(ids, NpgsqlDbType.Uuid));
            var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    stored[reader.GetGuid(0)] = (reader.GetInt64(1), reader.GetInt64(2));
                }
            }
        }

        if (stored.Count == 0)
        {
            return null;
        }

        if (stored.Count == ids.Length)
        {
            var (firstVersion, firstPosition) = stored[ids[0]];
            var consecutive = true;
            for (var i = 1; i < ids.Length && consecutive; i++)
            {
                consecutive = stored[ids[i]].Version == firstVersion + i;
            }

            if (consecutive && expectedVersion.IsRetryAt(firstVersion))
            {
                var (lastVersion, lastPosition) = stored[ids[^1]];
                return new AppendResult(streamId, lastVersion, firstPosition, lastPosition);
            }
        }

        throw new DuplicateEventException(streamId, ids.First(stored.ContainsKey));
    }
}
