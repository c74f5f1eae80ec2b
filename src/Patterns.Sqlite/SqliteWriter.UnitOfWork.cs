using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>
/// Checkpoints, inbox marks, the outbox and leases, inside the open transaction: what a unit of work writes besides its
/// appends and documents, shared with the store's single-purpose calls so both take one code path.
/// </summary>
internal sealed partial class SqliteWriter
{
    /// <summary>Reads a checkpoint, or null when there is none.</summary>
    public long? GetCheckpoint(string name)
    {
        var command = Prepared(_sql.SelectCheckpoint, "@name");
        command.Parameters[0].Value = name;
        return command.ExecuteScalar() is long position ? position : null;
    }

    /// <summary>Stores a checkpoint.</summary>
    public void SaveCheckpoint(string name, long position)
    {
        var command = Prepared(_sql.UpsertCheckpoint, "@name", "@position");
        command.Parameters[0].Value = name;
        command.Parameters[1].Value = position;
        command.ExecuteNonQuery();
    }

    /// <summary>Records that a consumer handled a message, stamped <paramref name="atTicks"/>; false when it was already recorded.</summary>
    public bool MarkHandled(string consumer, string messageId, long atTicks)
    {
        var command = Prepared(_sql.InboxMark, "@consumer", "@id", "@at");
        command.Parameters[0].Value = consumer;
        command.Parameters[1].Value = messageId;
        command.Parameters[2].Value = atTicks;
        return command.ExecuteNonQuery() > 0;
    }

    /// <summary>Stores an outbox message and returns its sequence number (AUTOINCREMENT: never one given before).</summary>
    public long EnqueueOutbox(OutboxMessage message, long atTicks)
    {
        var command = Prepared(_sql.InsertOutbox, "@destination", "@kind", "@key", "@payload", "@at");
        var p = command.Parameters;
        p[0].Value = message.Destination;
        p[1].Value = (int)message.Kind;
        p[2].Value = SqliteRows.OptionalText(message.PartitionKey);
        p[3].Value = SqliteRows.Array(message.Payload);
        p[4].Value = atTicks;
        return (long)command.ExecuteScalar()!;
    }

    /// <summary>Removes the outbox messages through a sequence number, after checking the fence when there is one.</summary>
    public long DeleteOutbox(long throughSequence, Lease? fence)
    {
        if (fence is not null)
        {
            CheckFence(fence);
        }

        var command = Prepared(_sql.DeleteOutbox, "@through");
        command.Parameters[0].Value = throughSequence;
        return command.ExecuteNonQuery();
    }

    /// <summary>Throws <see cref="LeaseLostException"/> unless the lease row still names the fence's owner and token (expiry is not checked: the token is the fence).</summary>
    public void CheckFence(Lease fence)
    {
        var command = Prepared(_sql.SelectLease, "@name");
        command.Parameters[0].Value = fence.Name;
        string? owner = null;
        long token = 0;
        using (var reader = command.ExecuteReader())
        {
            if (reader.Read())
            {
                owner = reader.IsDBNull(0) ? null : reader.GetString(0);
                token = reader.GetInt64(1);
            }
        }

        if (owner != fence.Owner || token != fence.Token)
        {
            throw new LeaseLostException(fence, owner);
        }
    }

    /// <summary>Takes a lease that is free, expired or already the owner's; null when another owner holds it unexpired.</summary>
    public Lease? TryAcquireLease(string name, string owner, TimeSpan duration)
    {
        var now = _time.GetUtcNow();
        var expires = now + duration;
        var command = Prepared(_sql.AcquireLease, "@name", "@owner", "@expires", "@now");
        var p = command.Parameters;
        p[0].Value = name;
        p[1].Value = owner;
        p[2].Value = expires.UtcTicks;
        p[3].Value = now.UtcTicks;
        return command.ExecuteScalar() is long token ? new Lease(name, owner, token, expires) : null;
    }

    /// <summary>Extends a lease still held with the same owner and token; null when it was lost.</summary>
    public Lease? RenewLease(Lease lease, TimeSpan duration)
    {
        var renewed = lease with { ExpiresAt = _time.GetUtcNow() + duration };
        return ChangeLease(_sql.RenewLease, lease, renewed.ExpiresAt.UtcTicks) ? renewed : null;
    }

    /// <summary>Frees a lease still held with the same owner and token, keeping the token; false when it was not held.</summary>
    public bool ReleaseLease(Lease lease) => ChangeLease(_sql.ReleaseLease, lease, expiresTicks: 0);

    /// <summary>Runs a lease UPDATE that applies only while the row still names the lease's owner and token.</summary>
    private bool ChangeLease(string sql, Lease lease, long expiresTicks)
    {
        var command = Prepared(sql, "@name", "@owner", "@token", "@expires");
        var p = command.Parameters;
        p[0].Value = lease.Name;
        p[1].Value = lease.Owner;
        p[2].Value = lease.Token;
        p[3].Value = expiresTicks;
        return command.ExecuteNonQuery() > 0;
    }
}
