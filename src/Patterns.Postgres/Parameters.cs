using Npgsql;
using NpgsqlTypes;

namespace Patterns.Postgres;

/// <summary>Typed positional parameters: no boxing, and the PostgreSQL type is explicit (no inference, trimming-safe).</summary>
internal static class Parameters
{
    public static NpgsqlParameter<string> Text(string value) => new() { TypedValue = value, NpgsqlDbType = NpgsqlDbType.Text };

    public static NpgsqlParameter<long> Bigint(long value) => new() { TypedValue = value, NpgsqlDbType = NpgsqlDbType.Bigint };

    public static NpgsqlParameter<int> Integer(int value) => new() { TypedValue = value, NpgsqlDbType = NpgsqlDbType.Integer };

    public static NpgsqlParameter<bool> Boolean(bool value) => new() { TypedValue = value, NpgsqlDbType = NpgsqlDbType.Boolean };

    public static NpgsqlParameter<ReadOnlyMemory<byte>> Bytes(ReadOnlyMemory<byte> value) => new() { TypedValue = value, NpgsqlDbType = NpgsqlDbType.Bytea };

    public static NpgsqlParameter<DateTime> Timestamp(DateTimeOffset value) =>
        new() { TypedValue = value.UtcDateTime, NpgsqlDbType = NpgsqlDbType.TimestampTz };

    public static NpgsqlParameter<T> Array<T>(T value, NpgsqlDbType elementType) =>
        new() { TypedValue = value, NpgsqlDbType = NpgsqlDbType.Array | elementType };
}
