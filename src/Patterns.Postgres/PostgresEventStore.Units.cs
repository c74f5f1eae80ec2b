using Npgsql;
using NpgsqlTypes;
using Patterns.Storage;

namespace Patterns.Postgres;

/// <summary>
/// The one-statement path of units of work: units that hold at most one append (without inline projections), inbox
/// claims and outbox messages, which is what a handler that records an event and sends a message commits, run as one
/// call of the schema's <c>commit_units</c> function: one round trip for a unit, or for a whole group of them, instead of
/// a savepoint and a statement per part. A unit the function refuses (a wrong expected version, a stored event id, a
/// deleted stream, a claimed message) stored nothing and runs again on the general path, which gives it the outcome it
/// would have had there: an exact retry still returns its original result.
/// </summary>
public sealed partial class PostgresEventStore
{
    /// <summary>Gets a value indicating whether <paramref name="work"/> can commit through <c>commit_units</c>.</summary>
    private static bool IsSimple(UnitOfWork work) =>
        work.Fences.Count == 0 && work.Checkpoints.Count == 0 && work.Documents.Count == 0
        && (work.Appends.Count == 0 || (work.Appends.Count == 1 && work.Appends[0].InlineProjection is null));

    /// <summary>Commits a simple unit alone in one statement; falls back to the general path when the function refuses it or fails.</summary>
    private async ValueTask<UnitOfWorkResult> CommitSimpleAloneAsync(UnitOfWork work, CancellationToken cancellationToken)
    {
        UnitRow row;
        var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            try
            {
                row = (await ExecuteUnitsAsync(connection, null, [work], notifyOutbox: true).ConfigureAwait(false))[0];
            }
            catch (PostgresException)
            {
                // The statement rolled back (a deadlock, an event id a concurrent transaction stored first): nothing is
                // stored, and the general path gives the unit its own outcome.
                row = default;
                row.Status = -1;
            }
        }

        if (row.Status != 0)
        {
            return await CommitGeneralAloneAsync(work, cancellationToken).ConfigureAwait(false);
        }

        Interlocked.Increment(ref _unitTransactions);
        var result = ResultOf(work, row);
        PublishCommitted(result.Appends.Count > 0 ? result.Appends[0].LastPosition : 0, result.LastOutboxSequence);
        return result;
    }

    /// <summary>Commits a group of simple units in one statement and completes each; never throws.</summary>
    private async Task RunSimpleGroupAsync(List<PendingUnit> group)
    {
        UnitRow[] rows;
        var sent = false;
        try
        {
            var connection = await OpenAsync(CancellationToken.None).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                sent = true;
                rows = await ExecuteUnitsAsync(connection, null, group.ConvertAll(static u => u.Work), notifyOutbox: true).ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            // A statement PostgreSQL rolled back, or one never sent, stored nothing: each unit runs again on its own. A
            // statement whose connection broke while it ran has an unknown outcome, so its units get the failure.
            var stored = sent && ex is not PostgresException;
            foreach (var unit in group)
            {
                if (stored)
                {
                    unit.Completion.TrySetException(ex);
                }
                else
                {
                    await CompleteAloneAsync(unit, general: true).ConfigureAwait(false);
                }
            }

            return;
        }

        Interlocked.Increment(ref _unitTransactions);
        long lastPosition = 0, lastSequence = 0, committed = 0;
        var results = new UnitOfWorkResult?[group.Count];
        for (var i = 0; i < group.Count; i++)
        {
            if (rows[i].Status == 0)
            {
                var result = results[i] = ResultOf(group[i].Work, rows[i]);
                committed++;
                lastPosition = Math.Max(lastPosition, result.Appends.Count > 0 ? result.Appends[0].LastPosition : 0);
                lastSequence = Math.Max(lastSequence, result.LastOutboxSequence);
            }
        }

        if (committed > 1)
        {
            Interlocked.Increment(ref _unitGroups);
        }

        PublishCommitted(lastPosition, lastSequence);
        for (var i = 0; i < group.Count; i++)
        {
            if (results[i] is { } result)
            {
                group[i].Completion.TrySetResult(result);
            }
            else
            {
                await CompleteAloneAsync(group[i], general: true).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Wakes this process's waiters for what a commit stored.</summary>
    private void PublishCommitted(long lastPosition, long lastSequence)
    {
        if (lastPosition > 0)
        {
            _listener.Publish(lastPosition);
        }

        if (lastSequence > 0)
        {
            _listener.Outbox.Publish(lastSequence);
        }
    }

    private static UnitOfWorkResult ResultOf(UnitOfWork work, UnitRow row)
    {
        if (work.Appends.Count == 0)
        {
            return row.LastSequence == 0 ? UnitOfWorkResult.Empty : new UnitOfWorkResult([], row.LastSequence);
        }

        var append = work.Appends[0];
        return new UnitOfWorkResult([new AppendResult(append.StreamId, row.Version, row.FirstPosition, row.FirstPosition + append.Events.Count - 1)], row.LastSequence);
    }

    /// <summary>
    /// Runs <c>commit_units</c> for simple units (in <paramref name="transaction"/>, or as a statement of its own); returns
    /// their rows in input order. With <paramref name="inOrder"/> the streams are locked, and the events placed in the log,
    /// in input order (the appends of one unit), else sorted by stream id (one lock order for every group).
    /// </summary>
    private async ValueTask<UnitRow[]> ExecuteUnitsAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, IReadOnlyList<UnitOfWork> units, bool notifyOutbox, bool inOrder = false)
    {
        var command = new NpgsqlCommand(_schema.CommitUnits, connection, transaction);
        await using (command.ConfigureAwait(false))
        {
            var order = AddUnitParameters(command.Parameters, units, notifyOutbox, inOrder);
            var reader = await command.ExecuteReaderAsync(CancellationToken.None).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                return await ReadUnitRowsAsync(reader, order).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Reads <c>commit_units</c>' rows, on which <paramref name="reader"/> stands, back into input order.</summary>
    private static async ValueTask<UnitRow[]> ReadUnitRowsAsync(NpgsqlDataReader reader, int[] order)
    {
        var rows = new UnitRow[order.Length];
        for (var slot = 0; slot < order.Length && await reader.ReadAsync(CancellationToken.None).ConfigureAwait(false); slot++)
        {
            rows[order[slot]] = new UnitRow { Status = reader.GetInt32(0), Version = reader.GetInt64(1), FirstPosition = reader.GetInt64(2), LastSequence = reader.GetInt64(3) };
        }

        return rows;
    }

    /// <summary>Adds <c>commit_units</c>' arguments for <paramref name="units"/>; returns the input index of each slot.</summary>
    private int[] AddUnitParameters(NpgsqlParameterCollection parameters, IReadOnlyList<UnitOfWork> units, bool notifyOutbox, bool inOrder)
    {
        // One lock order for every group: stream rows sorted by id (stable, so one stream's units keep their order).
        var order = new int[units.Count];
        for (var i = 0; i < order.Length; i++)
        {
            order[i] = i;
        }

        var keys = new string?[units.Count];
        for (var i = 0; i < keys.Length; i++)
        {
            keys[i] = units[i].Appends.Count > 0 ? units[i].Appends[0].StreamId : null;
        }

        if (!inOrder)
        {
            Array.Sort(keys, order, StringComparer.Ordinal);
        }

        var events = 0;
        int claims = 0, messages = 0;
        foreach (var work in units)
        {
            events += work.Appends.Count > 0 ? work.Appends[0].Events.Count : 0;
            claims += work.InboxClaims.Count;
            messages += work.Outbox.Count;
        }

        var streamIds = new string?[units.Count];
        var expected = new long[units.Count];
        var counts = new int[units.Count];
        var columns = new EventColumns(events);
        int[] claimUnits = claims == 0 ? [] : new int[claims];
        string[] consumers = claims == 0 ? [] : new string[claims];
        string[] messageIds = claims == 0 ? [] : new string[claims];
        int[] messageUnits = messages == 0 ? [] : new int[messages];
        string[] destinations = messages == 0 ? [] : new string[messages];
        short[] kinds = messages == 0 ? [] : new short[messages];
        string?[] partitionKeys = messages == 0 ? [] : new string?[messages];
        byte[][] payloads = messages == 0 ? [] : new byte[messages][];
        int e = 0, c = 0, m = 0;
        for (var slot = 0; slot < order.Length; slot++)
        {
            var work = units[order[slot]];
            if (work.Appends.Count > 0)
            {
                var append = work.Appends[0];
                streamIds[slot] = append.StreamId;
                expected[slot] = append.ExpectedVersion.Value;
                counts[slot] = append.Events.Count;
                foreach (var stored in append.Events)
                {
                    columns.Set(e++, stored);
                }
            }

            foreach (var message in work.Outbox)
            {
                (messageUnits[m], destinations[m], kinds[m], partitionKeys[m], payloads[m]) = (slot + 1, message.Destination, (short)message.Kind, message.PartitionKey, AsArray(message.Payload));
                m++;
            }
        }

        // Claims go in the order the units came (the first of two claims of one message wins), each naming its unit's slot.
        var slots = new int[order.Length];
        for (var slot = 0; slot < order.Length; slot++)
        {
            slots[order[slot]] = slot + 1;
        }

        for (var i = 0; i < units.Count; i++)
        {
            foreach (var (consumer, messageId) in units[i].InboxClaims)
            {
                (claimUnits[c], consumers[c], messageIds[c]) = (slots[i], consumer, messageId);
                c++;
            }
        }

        AddAppends(parameters, streamIds, expected, counts, columns);
        AddUnitParts(parameters, claimUnits, consumers, messageIds, messageUnits, destinations, kinds, partitionKeys, payloads, notifyOutbox);
        return order;
    }

    /// <summary>Adds <c>commit_units</c>' arguments after the appends': the inbox claims, the outbox messages, the time and the outbox channel.</summary>
    private void AddUnitParts(
        NpgsqlParameterCollection parameters,
        int[] claimUnits,
        string[] consumers,
        string[] messageIds,
        int[] messageUnits,
        string[] destinations,
        short[] kinds,
        string?[] partitionKeys,
        byte[][] payloads,
        bool notifyOutbox)
    {
        parameters.Add(Parameters.Array(claimUnits, NpgsqlDbType.Integer));
        parameters.Add(Parameters.Array(consumers, NpgsqlDbType.Text));
        parameters.Add(Parameters.Array(messageIds, NpgsqlDbType.Text));
        parameters.Add(Parameters.Array(messageUnits, NpgsqlDbType.Integer));
        parameters.Add(Parameters.Array(destinations, NpgsqlDbType.Text));
        parameters.Add(Parameters.Array(kinds, NpgsqlDbType.Smallint));
        parameters.Add(Parameters.Array(partitionKeys, NpgsqlDbType.Text));
        parameters.Add(Parameters.Array(payloads, NpgsqlDbType.Bytea));
        parameters.Add(Parameters.Timestamp(_timeProvider.GetUtcNow()));
        parameters.Add(new NpgsqlParameter<string?> { TypedValue = notifyOutbox && _notifications ? _schema.OutboxChannel : null, NpgsqlDbType = NpgsqlDbType.Text });
    }

    /// <summary>One unit's row from <c>commit_units</c>.</summary>
    private struct UnitRow
    {
        public int Status;
        public long Version;
        public long FirstPosition;
        public long LastSequence;
    }
}
