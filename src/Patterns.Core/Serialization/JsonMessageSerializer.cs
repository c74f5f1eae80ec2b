using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Patterns.Serialization;

/// <summary>
/// The default <see cref="IMessageSerializer"/>, on System.Text.Json.
/// </summary>
/// <remarks>
/// Give it a source-generated <see cref="JsonSerializerContext"/> (or options whose
/// <see cref="JsonSerializerOptions.TypeInfoResolver"/> is one) and it never uses reflection, which is what
/// trimmed and Native AOT applications need. Without a resolver it falls back to the reflection-based
/// resolver when the application allows reflection-based serialization.
/// </remarks>
public sealed class JsonMessageSerializer : IMessageSerializer
{
    private readonly JsonSerializerOptions _options;

    /// <summary>Initializes a new instance of the <see cref="JsonMessageSerializer"/> class with web defaults.</summary>
    public JsonMessageSerializer()
        : this(new JsonSerializerOptions(JsonSerializerDefaults.Web))
    {
    }

    /// <summary>Initializes a new instance of the <see cref="JsonMessageSerializer"/> class from a source-generated context.</summary>
    /// <param name="context">The context that knows every message type.</param>
    public JsonMessageSerializer(JsonSerializerContext context)
        : this(new JsonSerializerOptions(JsonSerializerDefaults.Web) { TypeInfoResolver = (context ?? throw new ArgumentNullException(nameof(context))) })
    {
    }

    /// <summary>Initializes a new instance of the <see cref="JsonMessageSerializer"/> class.</summary>
    /// <param name="options">The options; they are made read-only.</param>
    public JsonMessageSerializer(JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.TypeInfoResolver is null && !options.IsReadOnly)
        {
            // Without reflection (NativeAOT, trimming) there is no resolver to fall back on: an empty one lets the host start
            // (the in-memory transport never serializes) and names each type that needs a JsonSerializerContext when used.
            options.TypeInfoResolver = ReflectionResolver() ?? JsonTypeInfoResolver.Combine();
        }

        options.MakeReadOnly();
        _options = options;
    }

    /// <inheritdoc />
    public string ContentType => "application/json";

    /// <inheritdoc />
    public void Serialize(IBufferWriter<byte> writer, object value, Type type)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(type);
        // A writer kept by the thread and lent out for the call (a converter that serializes within it finds it taken and
        // gets its own): a new writer for each message was a good part of what serializing a small message allocated.
        var json = t_writer;
        t_writer = null;
        if (json is null)
        {
            json = new Utf8JsonWriter(writer);
        }
        else
        {
            json.Reset(writer);
        }

        try
        {
            JsonSerializer.Serialize(json, value, GetTypeInfo(type));
            json.Flush();
        }
        finally
        {
            // Reset() alone keeps the caller's buffer writer (and its array) alive with the thread until its next message.
            json.Reset(NoOutput.Instance);
            t_writer = json;
        }
    }

    [ThreadStatic]
    private static Utf8JsonWriter? t_writer;

    /// <summary>Where the writer the thread keeps points between messages: nowhere (it is never written to there).</summary>
    private sealed class NoOutput : IBufferWriter<byte>
    {
        public static readonly NoOutput Instance = new();

        public void Advance(int count) => throw new InvalidOperationException("The serializer's idle writer was written to.");

        public Memory<byte> GetMemory(int sizeHint = 0) => throw new InvalidOperationException("The serializer's idle writer was written to.");

        public Span<byte> GetSpan(int sizeHint = 0) => throw new InvalidOperationException("The serializer's idle writer was written to.");
    }

    /// <inheritdoc />
    public object Deserialize(ReadOnlyMemory<byte> payload, Type type)
    {
        ArgumentNullException.ThrowIfNull(type);
        JsonTypeInfo info = GetTypeInfo(type);
        object? value;
        try
        {
            value = JsonSerializer.Deserialize(payload.Span, info);
        }
        catch (JsonException ex)
        {
            throw new MessageDeserializationException(
                $"The payload ({payload.Length} bytes) is not valid JSON for message type '{type.FullName}': {ex.Message}", ex);
        }

        return value ?? throw new MessageDeserializationException(
            $"The payload ({payload.Length} bytes) is JSON null, which is not a valid '{type.FullName}' message.");
    }

    /// <inheritdoc />
    public object Deserialize(ReadOnlySequence<byte> payload, Type type)
    {
        if (payload.IsSingleSegment)
        {
            return Deserialize(payload.First, type);
        }

        ArgumentNullException.ThrowIfNull(type);
        JsonTypeInfo info = GetTypeInfo(type);
        object? value;
        try
        {
            // The reader walks the segments: no array as large as the message.
            var reader = new Utf8JsonReader(payload);
            value = JsonSerializer.Deserialize(ref reader, info);
            if (reader.Read())
            {
                throw new JsonException($"unexpected {reader.TokenType} after the message at byte {reader.TokenStartIndex}.");
            }
        }
        catch (JsonException ex)
        {
            throw new MessageDeserializationException(
                $"The payload ({payload.Length} bytes) is not valid JSON for message type '{type.FullName}': {ex.Message}", ex);
        }

        return value ?? throw new MessageDeserializationException(
            $"The payload ({payload.Length} bytes) is JSON null, which is not a valid '{type.FullName}' message.");
    }

    /// <summary>Gets a value indicating whether this serializer can write and read <paramref name="type"/> (it has metadata for it).</summary>
    internal bool HasMetadataFor(Type type) => _options.TryGetTypeInfo(type, out _);

    private JsonTypeInfo GetTypeInfo(Type type)
    {
        try
        {
            return _options.GetTypeInfo(type);
        }
        catch (NotSupportedException ex)
        {
            throw new MessageDeserializationException(
                $"The JSON serializer has no metadata for message type '{type.FullName}'. Add it to your JsonSerializerContext with [JsonSerializable(typeof({type.Name}))] and pass the context with UseSystemTextJson(context).", ex);
        }
    }

    [UnconditionalSuppressMessage("Trimming", "IL2026", Justification = "Only used when the application keeps reflection-based serialization enabled; trimmed and AOT apps pass a JsonSerializerContext.")]
    [UnconditionalSuppressMessage("AOT", "IL3050", Justification = "Only used when the application keeps reflection-based serialization enabled; trimmed and AOT apps pass a JsonSerializerContext.")]
    internal static IJsonTypeInfoResolver? ReflectionResolver() =>
        JsonSerializer.IsReflectionEnabledByDefault ? new DefaultJsonTypeInfoResolver() : null;
}
