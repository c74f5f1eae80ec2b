using System.Runtime.InteropServices;
using Microsoft.Data.Sqlite;
using Patterns.Storage;

namespace Patterns.Sqlite;

/// <summary>Commands, parameters and row mapping shared by the writer and the readers.</summary>
internal static class SqliteRows
{
    /// <summary>Creates a command whose parameters are added in order, to be set by index on each execution.</summary>
    public static SqliteCommand Command(SqliteConnection connection, string sql, params ReadOnlySpan<string> parameters)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var name in parameters)
        {
            command.Parameters.Add(new SqliteParameter { ParameterName = name });
        }

        return command;
    }

    /// <summary>Runs a statement that returns nothing.</summary>
    public static int Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return command.ExecuteNonQuery();
    }

    /// <summary>Gets the array behind <paramref name="memory"/> without copying when it spans a whole array; copies otherwise.</summary>
    public static byte[] Array(ReadOnlyMemory<byte> memory) =>
        MemoryMarshal.TryGetArray(memory, out var segment) && segment.Offset == 0 && segment.Array!.Length == segment.Count
            ? segment.Array
            : memory.ToArray();

    /// <summary>A parameter value for optional bytes: NULL when empty.</summary>
    public static object OptionalBlob(ReadOnlyMemory<byte> memory) => memory.IsEmpty ? DBNull.Value : Array(memory);

    /// <summary>A parameter value for an optional string.</summary>
    public static object OptionalText(string? value) => value is null ? DBNull.Value : value;

    /// <summary>Reads an event row selected with <see cref="SqliteSql.EventColumns"/>.</summary>
    /// <param name="reader">The reader, on a row.</param>
    /// <param name="streamId">The stream id when every row belongs to it (saves a string per row), or null.</param>
    public static StoredEvent ReadEvent(SqliteDataReader reader, string? streamId)
    {
        var position = reader.GetInt64(0);
        var stream = streamId ?? reader.GetString(1);
        var version = reader.GetInt64(2);
        var id = reader.GetGuid(3);
        var type = reader.GetString(4);
        var data = (byte[])reader.GetValue(5); // NOT NULL; an empty body reads as an empty array
        var timestamp = new DateTimeOffset(reader.GetInt64(9), TimeSpan.Zero);
        var stored = new StoredEvent(id, stream, version, position, type, data, timestamp);
        return reader.GetInt64(10) == 0
            ? stored
            : stored with
            {
                Metadata = reader.IsDBNull(6) ? default : (byte[])reader.GetValue(6),
                CorrelationId = reader.IsDBNull(7) ? null : reader.GetString(7),
                CausationId = reader.IsDBNull(8) ? null : reader.GetString(8),
            };
    }
}
