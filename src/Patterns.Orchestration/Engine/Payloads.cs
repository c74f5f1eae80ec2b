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

        var buffer = new ArrayBufferWriter<byte>(128);
        serializer.Serialize(buffer, value, type == typeof(object) ? value.GetType() : type);
        return buffer.WrittenSpan.ToArray();
    }
}
