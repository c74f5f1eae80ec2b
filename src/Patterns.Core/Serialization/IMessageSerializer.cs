using System.Buffers;

namespace Patterns.Serialization;

/// <summary>Turns message bodies into bytes and back, for transports that cross a process boundary.</summary>
/// <remarks>In-process transports never call the serializer. Implementations must be thread-safe.</remarks>
public interface IMessageSerializer
{
    /// <summary>Gets the media type this serializer writes, for example <c>application/json</c>.</summary>
    string ContentType { get; }

    /// <summary>Writes <paramref name="value"/> as bytes.</summary>
    /// <param name="writer">Where the bytes go.</param>
    /// <param name="value">The body.</param>
    /// <param name="type">The declared type of the body.</param>
    void Serialize(IBufferWriter<byte> writer, object value, Type type);

    /// <summary>Reads a body of type <paramref name="type"/> from bytes.</summary>
    /// <param name="payload">The bytes.</param>
    /// <param name="type">The expected type.</param>
    /// <returns>The body.</returns>
    /// <exception cref="MessageDeserializationException">The bytes are not a valid <paramref name="type"/>.</exception>
    object Deserialize(ReadOnlyMemory<byte> payload, Type type);

    /// <summary>Reads a body of type <paramref name="type"/> from bytes in several segments (a large message a transport received in chunks).</summary>
    /// <param name="payload">The bytes.</param>
    /// <param name="type">The expected type.</param>
    /// <returns>The body.</returns>
    /// <exception cref="MessageDeserializationException">The bytes are not a valid <paramref name="type"/>.</exception>
    /// <remarks>The default copies a payload of several segments into one array; override it to read the segments directly.</remarks>
    object Deserialize(ReadOnlySequence<byte> payload, Type type) =>
        Deserialize(payload.IsSingleSegment ? payload.First : payload.ToArray(), type);
}
