using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Patterns.Etl;

/// <summary>JSON-lines sources and sinks (one JSON object per line), through System.Text.Json type info (source-generated contexts keep them AOT-safe).</summary>
public static class JsonLines
{
    /// <summary>Reads a JSON-lines file. A line that is not valid JSON for <typeparamref name="T"/> is quarantined with its line and text. Resumable: the bookmark is the lines consumed.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file.</param>
    /// <param name="typeInfo">The type's JSON contract (for example <c>MyContext.Default.Order</c>).</param>
    /// <returns>The source.</returns>
    public static EtlSource<T> Read<T>(string path, JsonTypeInfo<T> typeInfo)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(typeInfo);
        return new JsonLinesSource<T>(path, typeInfo);
    }

    /// <summary>Writes a JSON-lines file, under a temporary name renamed into place when the run completes.</summary>
    /// <typeparam name="T">The record type.</typeparam>
    /// <param name="path">The file (replaced).</param>
    /// <param name="typeInfo">The type's JSON contract.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> Write<T>(string path, JsonTypeInfo<T> typeInfo)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(typeInfo);
        return new JsonLinesSink<T>(path, typeInfo);
    }
}

internal sealed class JsonLinesSource<T>(string path, JsonTypeInfo<T> typeInfo) : EtlSource<T>
{
    public override string Name => path;

    public override bool CanResume => true;

    public override async IAsyncEnumerable<T> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan | FileOptions.Asynchronous);
        await using var _ = stream.ConfigureAwait(false);
        context.Length = stream.Length;
        using var reader = new StreamReader(stream, Encoding.UTF8);
        long line = 0;
        while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } text)
        {
            line++;
            if (line <= context.Resume.Offset)
            {
                continue;
            }

            context.Offset = line;
            context.Line = line;
            if ((line & 1023) == 0)
            {
                context.BytesRead = stream.Position;
            }

            if (string.IsNullOrWhiteSpace(text))
            {
                continue;
            }

            T? record;
            string? error = null;
            try
            {
                record = JsonSerializer.Deserialize(text, typeInfo);
                if (record is null)
                {
                    error = "The line is JSON null.";
                }
            }
            catch (JsonException ex)
            {
                record = default;
                error = ex.Message;
            }

            if (error is not null)
            {
                context.Quarantine(text, null, error);
                continue;
            }

            yield return record!;
        }

        context.BytesRead = stream.Length;
    }
}

internal sealed class JsonLinesSink<T>(string path, JsonTypeInfo<T> typeInfo) : EtlSink<T>
{
    public override string Name => path;

    public override ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) =>
        new(new Writer(path, path + "." + context.RunId + ".tmp", typeInfo));

    private sealed class Writer(string path, string temporary, JsonTypeInfo<T> typeInfo) : EtlSinkWriter<T>
    {
        private readonly FileStream _stream = new(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        private bool _completed;

        // The file is moved into place only when the run completes.
        public override bool CommitsEachBatch => false;

        public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken)
        {
            Write(rows.Span);
            return new(new EtlLoadCounts(rows.Length, 0, 0));
        }

        private void Write(ReadOnlySpan<T> rows)
        {
            using (var writer = new Utf8JsonWriter(_stream))
            {
                foreach (var row in rows)
                {
                    JsonSerializer.Serialize(writer, row, typeInfo);
                    writer.Flush();
                    writer.Reset();
                    _stream.WriteByte((byte)'\n');
                }
            }
        }

        public override async ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken)
        {
            await _stream.DisposeAsync().ConfigureAwait(false);
            File.Move(temporary, path, overwrite: true);
            _completed = true;
            return default;
        }

        public override async ValueTask DisposeAsync()
        {
            await _stream.DisposeAsync().ConfigureAwait(false);
            if (!_completed)
            {
                File.Delete(temporary);
            }

            await base.DisposeAsync().ConfigureAwait(false);
        }
    }
}
