using System.Buffers;
using Patterns.Serialization;

namespace Patterns.Orchestration.Engine;

/// <summary>Inputs, results and signals as the bytes recorded in histories and carried by activity messages.</summary>
internal static class Payloads
{
    /// <summary>Serializes <paramref name="value"/> (null stays null); <c>object</c> stands for the value's own type.</summary>
    public static byte[]? ToPayload(this IMessageSerializer serializer, object? value, Type type)
    {
        if (value is null)
        {
            return null;
        }

        // A buffer kept by the thread and lent out for the call (a serializer that serializes a payload within one finds it
        // taken and gets its own): a new one for each payload, and its 128 bytes, were half of what a payload allocated.
        var buffer = t_buffer ?? new ArrayBufferWriter<byte>(128);
        t_buffer = null;
        try
        {
            serializer.Serialize(buffer, value, type == typeof(object) ? value.GetType() : type);
            return buffer.WrittenSpan.ToArray();
        }
        finally
        {
            if (buffer.Capacity <= MaxKeptBuffer)
            {
                buffer.Clear(); // no payload lingers in a buffer the thread keeps
                t_buffer = buffer;
            }
        }
    }

    // A payload larger than this leaves its buffer to the collector instead of keeping it on the thread.
    private const int MaxKeptBuffer = 16 * 1024;

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_buffer;
}
