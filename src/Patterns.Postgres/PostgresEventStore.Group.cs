using Npgsql;
using NpgsqlTypes;
using Patterns.Storage;

namespace Patterns.Postgres;

/// <summary>
/// Group commit: appends (without inline projections) that arrive while another append is running queue up, and
/// the queue is committed as one transaction by the schema's <c>commit_units</c> function (without inbox claims or
/// outbox messages; the older <c>append_group</c> stays in the schema for processes of earlier versions). Positions commit one
/// transaction at a time (see docs/stores/postgres.md), so sharing a transaction, and its WAL flush, is what lets
/// concurrent appenders go faster than one commit each.
/// </summary>
public sealed partial class PostgresEventStore
{
    private const int Appended = 0;
    private const int WrongVersion = 1;
    private const int Deleted = 2;
    private const int IdsStored = 3;

    private readonly GroupQueue<PendingAppend, AppendResult> _appendQueue;
    private long _groups;

    /// <summary>Gets how many groups of two or more appends were committed together (for tests).</summary>
    internal long Groups => Interlocked.Read(ref _groups);

    /// <summary>Gets how many appends wait for the next group (for tests).</summary>
    internal int QueuedAppends => _appendQueue.Count;

    private ValueTask<AppendResult> AppendGroupedAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, CancellationToken cancellationToken) =>
        _appendQueue.RunAsync(
            new PendingAppend(streamId, expectedVersion, events),
            ct => AppendOneAsync(streamId, expectedVersion, events, null, ct),
            cancellationToken);

    /// <summary>Commits a group and completes every append in it; never throws.</summary>
    private async Task RunAppendGroupAsync(List<PendingAppend> group)
    {
        if (group.Count == 1)
        {
            await RunAloneAsync(group[0]).ConfigureAwait(false);
            return;
        }

        // One lock order for every group: stream rows sorted by id (stable, so one stream's appends keep their order).
        var sorted = group.OrderBy(a => a.StreamId, StringComparer.Ordinal).ToArray();
        (int Status, long Version, long FirstPosition)[] outcomes;
        try
        {
            outcomes = await ExecuteGroupAsync(sorted).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            // A failure of the whole group (a deadlock with another process, a race on an event id, a broken
            // connection): nothing was stored, so each append runs again on its own and gets its own outcome.
            foreach (var append in sorted)
            {
                await RunAloneAsync(append).ConfigureAwait(false);
            }

            return;
        }
        catch (Exception ex)
        {
            // The store was disposed, or the schema is missing: every append in the group fails the same way.
            foreach (var append in sorted)
            {
                append.Completion.TrySetException(ex);
            }

            return;
        }

        Interlocked.Increment(ref _groups);
        var head = 0L;
        for (var i = 0; i < sorted.Length; i++)
        {
            var (status, version, first) = outcomes[i];
            if (status == Appended)
            {
                var last = first + sorted[i].Events.Count - 1;
                head = Math.Max(head, last);
                sorted[i].Completion.TrySetResult(new AppendResult(sorted[i].StreamId, version, first, last));
            }
        }

        if (head > 0)
        {
            _listener.Publish(head);
        }

        for (var i = 0; i < sorted.Length; i++)
        {
            var (status, version, _) = outcomes[i];
            if (status != Appended)
            {
                await CompleteRefusedAsync(sorted[i], status, version).ConfigureAwait(false);
            }
        }
    }

    private async Task RunAloneAsync(PendingAppend append)
    {
        try
        {
            append.Completion.TrySetResult(await AppendOneAsync(append.StreamId, append.ExpectedVersion, append.Events, null, CancellationToken.None).ConfigureAwait(false));
        }
        catch (Exception ex)
        {
            append.Completion.TrySetException(ex);
        }
    }

    /// <summary>Gives a refused append in a group the outcome it would have had alone.</summary>
    private async Task CompleteRefusedAsync(PendingAppend append, int status, long actualVersion)
    {
        try
        {
            if (status == Deleted)
            {
                throw new StreamDeletedException(append.StreamId);
            }

            AppendResult? retry;
            var connection = await OpenAsync(CancellationToken.None).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                retry = await FindRetryAsync(connection, append.StreamId, append.ExpectedVersion, append.Events, CancellationToken.None).ConfigureAwait(false);
            }

            if (retry is { } original)
            {
                append.Completion.TrySetResult(original);
            }
            else if (status == WrongVersion)
            {
                throw new WrongExpectedVersionException(append.StreamId, append.ExpectedVersion, actualVersion);
            }
            else
            {
                // The ids it collided with are gone again (a hard delete in between): try it once more on its own.
                await RunAloneAsync(append).ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            append.Completion.TrySetException(ex);
        }
    }

    private async Task<(int Status, long Version, long FirstPosition)[]> ExecuteGroupAsync(PendingAppend[] group)
    {
        var total = 0;
        foreach (var append in group)
        {
            total += append.Events.Count;
        }

        var streamIds = new string[group.Length];
        var expected = new long[group.Length];
        var counts = new int[group.Length];
        var columns = new EventColumns(total);
        var index = 0;
        for (var i = 0; i < group.Length; i++)
        {
            streamIds[i] = group[i].StreamId;
            expected[i] = group[i].ExpectedVersion.Value;
            counts[i] = group[i].Events.Count;
            foreach (var e in group[i].Events)
            {
                columns.Set(index++, e);
            }
        }

        var outcomes = new (int, long, long)[group.Length];
        var connection = await OpenAsync(CancellationToken.None).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            // commit_units without inbox claims or outbox messages: the set-based group append (a few statements for the
            // whole group, where append_group runs four per append while it holds the position lock).
            var command = new NpgsqlCommand(_schema.CommitUnits, connection);
            await using (command.ConfigureAwait(false))
            {
                var parameters = command.Parameters;
                AddAppends(parameters, streamIds, expected, counts, columns);
                AddUnitParts(parameters, [], [], [], [], [], [], [], [], notifyOutbox: false);
                var reader = await command.ExecuteReaderAsync(CancellationToken.None).ConfigureAwait(false);
                await using (reader.ConfigureAwait(false))
                {
                    for (var i = 0; i < outcomes.Length && await reader.ReadAsync(CancellationToken.None).ConfigureAwait(false); i++)
                    {
                        outcomes[i] = (reader.GetInt32(0), reader.GetInt64(1), reader.GetInt64(2));
                    }
                }
            }
        }

        return outcomes;
    }

    /// <summary>Adds the parameters <c>commit_units</c> starts with: per batch its stream (null: none), expected version and event count, then the events and the channel.</summary>
    private void AddAppends(NpgsqlParameterCollection parameters, string?[] streamIds, long[] expected, int[] counts, EventColumns columns)
    {
        parameters.Add(Parameters.Array(streamIds, NpgsqlDbType.Text));
        parameters.Add(Parameters.Array(expected, NpgsqlDbType.Bigint));
        parameters.Add(Parameters.Array(counts, NpgsqlDbType.Integer));
        columns.AddTo(parameters);
        parameters.Add(Channel());
    }

    private NpgsqlParameter<string?> Channel() =>
        new() { TypedValue = _notifications ? _schema.Channel : null, NpgsqlDbType = NpgsqlDbType.Text };

    /// <summary>An append waiting for the next group.</summary>
    private sealed class PendingAppend(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events)
        : GroupQueue<PendingAppend, AppendResult>.Pending
    {
        public string StreamId { get; } = streamId;

        public ExpectedVersion ExpectedVersion { get; } = expectedVersion;

        public IReadOnlyList<SerializedEvent> Events { get; } = events;
    }

    /// <summary>The event columns of one or more appends, as the arrays the append functions take.</summary>
    private sealed class EventColumns(int count)
    {
        private readonly Guid[] _ids = new Guid[count];
        private readonly string[] _types = new string[count];
        private readonly byte[][] _data = new byte[count][];
        private readonly byte[]?[] _metadata = new byte[]?[count];
        private readonly string?[] _correlationIds = new string?[count];
        private readonly string?[] _causationIds = new string?[count];
        private readonly DateTime[] _timestamps = new DateTime[count];

        public void Set(int index, SerializedEvent e)
        {
            _ids[index] = e.EventId;
            _types[index] = e.EventType;
            _data[index] = AsArray(e.Data);
            _metadata[index] = e.Metadata.IsEmpty ? null : AsArray(e.Metadata);
            _correlationIds[index] = e.CorrelationId;
            _causationIds[index] = e.CausationId;
            _timestamps[index] = e.Timestamp.UtcDateTime;
        }

        public void AddTo(NpgsqlParameterCollection parameters)
        {
            parameters.Add(Parameters.Array(_ids, NpgsqlDbType.Uuid));
            parameters.Add(Parameters.Array(_types, NpgsqlDbType.Text));
            parameters.Add(Parameters.Array(_data, NpgsqlDbType.Bytea));
            parameters.Add(Parameters.Array(_metadata, NpgsqlDbType.Bytea));
            parameters.Add(Parameters.Array(_correlationIds, NpgsqlDbType.Text));
            parameters.Add(Parameters.Array(_causationIds, NpgsqlDbType.Text));
            parameters.Add(Parameters.Array(_timestamps, NpgsqlDbType.TimestampTz));
        }
    }
}
