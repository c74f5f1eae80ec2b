using System.Reflection;

namespace Patterns.Messaging;

internal static class MessageTypeNames
{
    public static string Default(Type type) =>
        type.GetCustomAttribute<MessageNameAttribute>()?.Name ?? type.FullName ?? type.Name;
}
