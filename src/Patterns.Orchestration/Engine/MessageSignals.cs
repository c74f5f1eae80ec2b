namespace Patterns.Orchestration.Engine;

/// <summary>Correlated messages reach a workflow as signals named after their type.</summary>
internal static class MessageSignals
{
    public static string NameOf(Type messageType) => "message:" + messageType.Name;
}
